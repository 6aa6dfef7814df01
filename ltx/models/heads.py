"""Classifier heads on pooled features: [B, F] -> logits [B, C], computed in float32.

- `linear`: the LDAM-DRW / RIDE CIFAR linear classifier, kaiming-normal weight (fan_in, gain
  sqrt(2)) and PyTorch's default U(-1/sqrt(F), 1/sqrt(F)) bias; with `linear_init='torch'` the
  ImageNet references' plain `nn.Linear` (weight and bias both U(-1/sqrt(F), 1/sqrt(F))).
- `cosine`: the `NormedLinear` of LDAM-DRW / RIDE / SADE / BalPoE,
  `scale * normalize(f) @ normalize(W, axis=0)` with W [F, C], no bias, initialised as the
  official `uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)`: U(-1, 1), then every class column
  rescaled to unit norm. The forward pass normalises the columns anyway, but the gradient with
  respect to a column scales as 1 / ||w||: columns left at their U(-1, 1) norm sqrt(F / 3) (4.6 for
  ResNet-32's F = 64, 22.6 for ResNeXt-50's 1536) would turn 3 / F as fast under SGD as the
  official ones until weight decay shrank them. The official code multiplies by 30 (the BalPoE
  paper writes 32); `scale` is an attribute.
- `lws`: ACE's learnable weight scaling, `scales * (f @ W + b)` with `scales` [C] initialised to 1
  and W, b from PyTorch's default `nn.Linear` init (U(-1/sqrt(F), 1/sqrt(F)) for both).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models.initializers import kaiming_normal, normed_linear_init, torch_linear_default_init

HEAD_KINDS = ("linear", "cosine", "lws")
LINEAR_INITS = ("kaiming", "torch")
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default eps.


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = NORMALIZE_EPS) -> jax.Array:
    """x / max(||x||_2, eps) along `axis`, as `torch.nn.functional.normalize`."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


class LinearHead(nn.Module):
    """Dense F -> C: bias [C] ~ U(-1/sqrt(F), 1/sqrt(F)); kernel [F, C] kaiming normal
    (`kernel_init='kaiming'`, LDAM-DRW's CIFAR init) or the same uniform as the bias ('torch',
    PyTorch's `nn.Linear` default, which the ImageNet references keep)."""

    num_classes: int
    kernel_init: str = "kaiming"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        features = jnp.asarray(features, jnp.float32)
        fan_in = features.shape[-1]
        if self.kernel_init not in LINEAR_INITS:
            raise ValueError(f"unknown linear head kernel_init {self.kernel_init!r}; expected one "
                             f"of {LINEAR_INITS}")
        kernel_init = (kaiming_normal if self.kernel_init == "kaiming"
                       else torch_linear_default_init(fan_in))
        return nn.Dense(self.num_classes, kernel_init=kernel_init,
                        bias_init=torch_linear_default_init(fan_in), dtype=jnp.float32,
                        param_dtype=jnp.float32, name="dense")(features)


class CosineHead(nn.Module):
    """Scaled cosine similarity to each class column: [B, F] -> [B, C] in [-scale, scale].

    Parameter `kernel` [F, C] with unit-norm columns at initialisation (`normed_linear_init`);
    its columns are normalised in the forward pass.
    """

    num_classes: int
    scale: float = 30.0

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        features = jnp.asarray(features, jnp.float32)
        kernel = self.param("kernel", normed_linear_init, (features.shape[-1], self.num_classes),
                            jnp.float32)
        return self.scale * (l2_normalize(features, axis=-1) @ l2_normalize(kernel, axis=0))


class LWSHead(nn.Module):
    """Learnable weight scaling: `scales * (f @ kernel + bias)`; [B, F] -> [B, C].

    `kernel` [F, C] and `bias` [C] ~ U(-1/sqrt(F), 1/sqrt(F)); `scales` [C] starts at 1.
    """

    num_classes: int

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        features = jnp.asarray(features, jnp.float32)
        fan_in = features.shape[-1]
        init = torch_linear_default_init(fan_in)
        kernel = self.param("kernel", init, (fan_in, self.num_classes), jnp.float32)
        bias = self.param("bias", init, (self.num_classes,), jnp.float32)
        scales = self.param("scales", nn.initializers.ones, (self.num_classes,), jnp.float32)
        return scales * (features @ kernel + bias)


def make_head(kind: str, num_classes: int, *, scale: float = 30.0, linear_init: str = "kaiming",
              name: str | None = None) -> nn.Module:
    """The head named `kind` ('linear', 'cosine' or 'lws'); `scale` is used by 'cosine' only,
    `linear_init` ('kaiming' or 'torch') by 'linear' only."""
    if kind == "linear":
        return LinearHead(num_classes, kernel_init=linear_init, name=name)
    if kind == "cosine":
        return CosineHead(num_classes, scale=scale, name=name)
    if kind == "lws":
        return LWSHead(num_classes, name=name)
    raise ValueError(f"unknown head kind {kind!r}; expected one of {HEAD_KINDS}")


def torch_dense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
    """A float32 `nn.Dense` with PyTorch's default `nn.Linear` init (weight and bias
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))), for the routers that methods add to the trunk."""
    init = torch_linear_default_init(fan_in)
    return nn.Dense(features, kernel_init=init, bias_init=init, dtype=jnp.float32,
                    param_dtype=jnp.float32, name=name)
