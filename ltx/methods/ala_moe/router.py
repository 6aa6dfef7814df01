"""The instance-aware router of ALA + MoE (Zhao et al.), and the routed model.

There is no official code; this follows the paper's description: global average pooling of the
shared trunk's feature map, then one linear layer giving a logit per expert; `softmax` of them
weighs the experts (`ltx.fusion.router_weighted`). PyTorch's default `nn.Linear` init, float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models.heads import torch_dense
from ltx.models.wrappers import TrunkWrapper


class InstanceRouter(nn.Module):
    """`(shared feature map [B, H, W, F]) -> router logits [B, E]`; softmax gives the weights."""

    num_experts: int

    @nn.compact
    def __call__(self, shared: jax.Array) -> jax.Array:
        pooled = jnp.mean(shared.astype(jnp.float32), axis=(1, 2))
        return torch_dense(self.num_experts, pooled.shape[-1], "gate")(pooled)


class InstanceRoutedModel(TrunkWrapper):
    """A multi-expert trunk with the instance-aware router on its shared features, trained end
    to end. The trunk's variables keep their names (`nn.share_scope`); the router's live under
    'router'.

    `__call__(x, *, train, mask=None)` -> {'logits': [E, B, C], 'router': [B, E]} (mask: bool [B],
    the real rows of a padded batch, for the trunk's BatchNorm).
    """

    def setup(self):
        if self.trunk.num_shared_stages == 0:
            raise ValueError("the instance-aware router reads the shared trunk's features, but "
                             "model.num_shared_stages=0 has no shared trunk")
        self.share_trunk_scope()
        self.router = InstanceRouter(self.trunk.num_experts)

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        logits, _, shared = self.trunk(x, train=train, mask=mask, return_shared=True)
        return {"logits": logits, "router": self.router(shared)}
