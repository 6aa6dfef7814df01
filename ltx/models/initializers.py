"""The parameter initialisers of ltx's models, each drawn by an XLA function of its own.

A model's `init` draws every parameter from a key of its own. Inlined, as `jax.jit` inlines a
nested jitted function by default, XLA compiles the draw (threefry bits, and erf_inv for a
normal) once per parameter: the default job's init (BalPoE, 3 experts on ResNet-32) lowered to
12.4k StableHLO ops and took 3.2 s to compile on a 2-core x86 CPU. An initialiser here
is a jitted function that XLA inlines late (`jax.Inline.XLA_LATE`), so a program compiles each
(initialiser, shape, dtype) once: 3.6k ops and 1.9 s, most of what is left being Flax's
per-parameter key derivation. Every drawn value is bit-identical to the inlined draw's
(tests/test_models_initializers.py); only compile time changes.

- `kaiming_normal`: PyTorch's `kaiming_normal_(mode='fan_in', nonlinearity='relu')`,
  N(0, 2 / fan_in), untruncated (Flax's 'normal' distribution): the CIFAR ResNets' convolutions
  and linear classifiers.
- `kaiming_normal_fan_out`: the same with fan_out = kh * kw * out_channels, the torchvision
  ResNets' convolutions.
- `torch_linear_default_init(fan_in)`: PyTorch's default `nn.Linear` U(-1/sqrt(fan_in), +).
- `normed_linear_init`: the official `NormedLinear` weight, unit-norm class columns.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def outlined(init):
    """`init(key, shape, dtype)` as a call that XLA compiles once per shape and dtype in a
    program (the values are those of `init`)."""
    jitted = jax.jit(init, static_argnums=(1, 2), inline=jax.Inline.XLA_LATE)

    @functools.wraps(init)
    def draw(key, shape, dtype=jnp.float32):
        return jitted(key, tuple(shape), jnp.dtype(dtype))

    return draw


kaiming_normal = outlined(nn.initializers.variance_scaling(2.0, "fan_in", "normal"))
kaiming_normal_fan_out = outlined(nn.initializers.variance_scaling(2.0, "fan_out", "normal"))


@functools.cache
def torch_linear_default_init(fan_in: int) -> jax.nn.initializers.Initializer:
    """PyTorch's default `nn.Linear` init for a layer with `fan_in` inputs: U(-1/sqrt(fan_in), +).

    (`kaiming_uniform_(a=sqrt(5))` on the weight reduces to this bound; the bias uses it directly.)
    """
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return outlined(init)


@outlined
def normed_linear_init(key, shape, dtype=jnp.float32):
    """NormedLinear's `weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)` for W [F, C]:
    U(-1, 1), then each column (dim 1 of the official [F, C] weight) scaled by
    1e-5 / (||w_c|| + 1e-7) (renorm's factor for a norm above 1e-5) and by 1e5, i.e. to norm
    ||w_c|| / (||w_c|| + 1e-7), 1 up to ~1e-7."""
    w = jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=0, keepdims=True))
    return (w * (1e-5 / (norms + 1e-7)) * 1e5).astype(dtype)
