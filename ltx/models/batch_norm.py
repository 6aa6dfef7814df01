"""BatchNorm as PyTorch's `nn.BatchNorm2d` trains it, with a mask for padded batches.

Two things differ from flax's `nn.BatchNorm`:

- The running variance. PyTorch normalises a batch with its biased variance but folds the
  *unbiased* one, var * n / (n - 1) with n = B * H * W elements per channel, into the running
  estimate; flax folds the biased one, so its running variance is (n - 1) / n of PyTorch's (a
  relative 1e-4 at CIFAR batch 128, 5e-3 on ResNet-50's 7x7 maps at a small per-device batch).
  Every official code base of the methods here is PyTorch, so `unbiased_running_var=True` is the
  default; False gives flax's convention.
- `mask`: rows of a padded batch that are not real examples take no part in the statistics, so a
  batch padded to its fixed shape normalises and updates exactly as the smaller batch alone.

The statistics are plain reductions over every axis but the channels. Under `jax.jit` with the
batch sharded over devices they are those of the global batch (synchronised BatchNorm), as with
flax's module without an `axis_name`. The variables have flax's names and shapes (params
'scale', 'bias' [C]; batch_stats 'mean', 'var' [C]), so checkpoints and the PyTorch import read
the same either way.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
    """x [B, ..., C] -> [B, ..., C] (dtype `dtype`), normalised per channel C.

    Attributes:
      use_running_average: inference mode (the running statistics normalise; nothing updates).
      momentum: flax convention, running = momentum * running + (1 - momentum) * batch
        (0.9 is PyTorch's momentum 0.1).
      epsilon: added to the variance (PyTorch's 1e-5).
      unbiased_running_var: fold the unbiased batch variance into the running one (PyTorch).
      dtype: output dtype; statistics are computed in float32 (or wider).
      param_dtype: dtype of scale and bias.
      scale_init, bias_init: initialisers of scale (gamma) and bias (beta).
    """

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased_running_var: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """`mask`: bool [B], the real rows of a padded batch (None: all); ignored in inference
        mode."""
        channels = x.shape[-1]
        scale = self.param("scale", self.scale_init, (channels,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (channels,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((channels,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((channels,), jnp.float32))
        stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
        xs = x.astype(stat_dtype)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            per_row = math.prod(x.shape[1:-1])
            if mask is None:
                weights = None
                count = jnp.asarray(x.shape[0] * per_row, stat_dtype)
            else:
                weights = mask.astype(stat_dtype).reshape((-1,) + (1,) * (x.ndim - 1))
                count = jnp.sum(mask.astype(stat_dtype)) * per_row
            safe = jnp.maximum(count, 1.0)

            def total(values):
                values = values if weights is None else values * weights
                return jnp.sum(values, axis=axes)

            mean = total(xs) / safe
            # Two passes (x - mean), not E[x^2] - E[x]^2: no cancellation for large means.
            var = total(jnp.square(xs - mean)) / safe
            if not self.is_initializing():
                running_var = var
                if self.unbiased_running_var:
                    running_var = var * count / jnp.maximum(count - 1.0, 1.0)
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
                ra_var.value = m * ra_var.value + (1.0 - m) * running_var
        y = (xs - mean) * jax.lax.rsqrt(var + self.epsilon)
        y = y * scale.astype(stat_dtype) + bias.astype(stat_dtype)
        return y.astype(self.dtype)
