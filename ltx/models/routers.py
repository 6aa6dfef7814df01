"""Routers that decide, per image, how much each expert counts.

- `CascadeRouter` (RIDE's expert assignment, stage 2; official `ea_resnet_cifar.py` /
  `EAResNet.py`): router i (i = 0..E-2) decides whether an image that has run experts 0..i goes
  on to expert i+1. Its input is the top-k of the running mean of the first i+1 experts' logits
  (sorted, descending) and a hidden layer of 16 ReLU units on expert i's L2-normalised pooled
  features; one output layer, shared by all routers, gives the logit r_i. The hidden layers are
  per router. At inference `ltx.fusion.ride_cascade` stops an image once sigmoid(r_i) <= 0.5.
- `InstanceRouter` (the instance-aware router of ALA + MoE, Zhao et al.): global average
  pooling of the shared trunk's feature map, then one linear layer giving a logit per expert;
  `softmax` of them weighs the experts (`ltx.fusion.router_weighted`). There is no official code;
  this follows the paper's description.

Both use PyTorch's default `nn.Linear` initialisation and compute in float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models.heads import l2_normalize
from ltx.models.resnet_cifar import torch_linear_default_init

ROUTER_KINDS = ("none", "cascade", "instance")


def _dense(features: int, fan_in: int, name: str) -> nn.Dense:
    init = torch_linear_default_init(fan_in)
    return nn.Dense(features, kernel_init=init, bias_init=init, dtype=jnp.float32,
                    param_dtype=jnp.float32, name=name)


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
        output = _dense(1, k + self.hidden, "output")
        steps = []
        for i in range(num_experts - 1):
            top = jax.lax.top_k(running_mean[i], k)[0]  # [B, k], descending.
            f = l2_normalize(features[i].astype(jnp.float32))
            h = nn.relu(_dense(self.hidden, f.shape[-1], f"hidden{i}")(f))
            steps.append(output(jnp.concatenate([top, h], axis=-1))[:, 0])
        return jnp.stack(steps, axis=-1)


class InstanceRouter(nn.Module):
    """`(shared feature map [B, H, W, F]) -> router logits [B, E]`; softmax gives the weights."""

    num_experts: int

    @nn.compact
    def __call__(self, shared: jax.Array) -> jax.Array:
        pooled = jnp.mean(shared.astype(jnp.float32), axis=(1, 2))
        return _dense(self.num_experts, pooled.shape[-1], "gate")(pooled)
