"""RIDE's expert-assignment router (stage 2) and the frozen, routed model it trains on.

Official code: `model/ldam_drw_resnets/ea_resnet_cifar.py` and `model/fb_resnets/EAResNet.py` of
frank-xwang/RIDE-LongTailRecognition. Router i (i = 0..E-2) decides whether an image that has run
experts 0..i goes on to expert i+1. Its input is the top-k of the running mean of the first i+1
experts' logits (sorted, descending) and a hidden layer of 16 ReLU units on expert i's
L2-normalised pooled features; one output layer, shared by all routers, gives the logit r_i. The
hidden layers are per router. At inference `ltx.methods.ride.cascade.ride_cascade` stops an image
once sigmoid(r_i) <= 0.5. PyTorch's default `nn.Linear` initialisation, float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models.heads import l2_normalize, torch_dense
from ltx.models.wrappers import TrunkWrapper


class CascadeRouter(nn.Module):
    """`(expert_logits [E, B, C], features [E, B, F]) -> router logits [B, E - 1]`.

    Attributes:
      hidden: units of each router's hidden layer (16).
      top_k: how many of the sorted running-mean logits the routers see (30 on CIFAR-100, 50 on
        ImageNet-LT and iNaturalist; capped at C).
    """

    hidden: int = 16
    top_k: int = 30

    @nn.compact
    def __call__(self, expert_logits: jax.Array, features: jax.Array) -> jax.Array:
        num_experts, _, num_classes = expert_logits.shape
        if num_experts < 2:
            raise ValueError(f"a cascade router needs at least 2 experts, got logits of shape "
                             f"{tuple(expert_logits.shape)}")
        if self.top_k < 1 or self.hidden < 1:
            raise ValueError(f"router top_k={self.top_k} and hidden={self.hidden}; expected >= 1")
        k = min(self.top_k, num_classes)
        logits = expert_logits.astype(jnp.float32)
        counts = jnp.arange(1, num_experts + 1, dtype=jnp.float32)[:, None, None]
        running_mean = jnp.cumsum(logits, axis=0) / counts  # [E, B, C]
        output = torch_dense(1, k + self.hidden, "output")
        steps = []
        for i in range(num_experts - 1):
            top = jax.lax.top_k(running_mean[i], k)[0]  # [B, k], descending.
            f = l2_normalize(features[i].astype(jnp.float32))
            h = nn.relu(torch_dense(self.hidden, f.shape[-1], f"hidden{i}")(f))
            steps.append(output(jnp.concatenate([top, h], axis=-1))[:, 0])
        return jnp.stack(steps, axis=-1)


class CascadeRoutedModel(TrunkWrapper):
    """A trained multi-expert trunk, frozen, with RIDE's cascade router on top.

    The trunk runs in inference mode (BatchNorm running statistics, which therefore stay as
    they are) and its outputs pass through `stop_gradient`, so only the router learns. The
    trunk's variables keep their names (`nn.share_scope`); the router's live under 'router'.

    `__call__(x, *, train, mask=None)` -> {'logits': [E, B, C], 'router': [B, E - 1]}; the mask
    of a padded batch has nothing to do here (no BatchNorm statistics are computed).
    """

    hidden: int = 16
    top_k: int = 30

    def setup(self):
        if self.trunk.num_experts < 2:
            raise ValueError(f"RIDE's cascade router needs num_experts >= 2, got "
                             f"{self.trunk.num_experts}")
        self.share_trunk_scope()
        self.router = CascadeRouter(hidden=self.hidden, top_k=self.top_k)

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        del train, mask  # The trunk is frozen in both modes; the router has no BatchNorm.
        logits, features = jax.lax.stop_gradient(
            self.trunk(x, train=False, return_features=True))
        return {"logits": logits, "router": self.router(logits, features)}
