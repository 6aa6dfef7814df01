"""CIFAR ResNet building blocks (ResNet-32 and its reduced-width expert variants), NHWC.

Follows the CIFAR ResNet of the official LDAM-DRW code (`models/resnet_cifar.py`), which RIDE,
SADE and BalPoE reuse for their experts:

- stem: conv3x3 (in -> width, stride 1, padding 1, no bias) -> BatchNorm -> ReLU;
- BasicBlock: conv3x3 (stride s, no bias) -> BN -> ReLU -> conv3x3 -> BN, + shortcut, -> ReLU;
- option-A shortcut (no parameters) whenever stride != 1 or the width changes: spatial subsample
  `x[:, ::2, ::2, :]` when strided, then zero-pad the channels by (planes - in_planes) // 2 on
  each side. This is the RIDE/SADE/BalPoE form; LDAM pads planes // 4, the same number for the
  standard 16/32/64 widths, but only the RIDE form is right for reduced widths (16 -> 24 -> 48).
- init: kaiming normal (fan_in, gain sqrt(2), untruncated) on conv and linear weights, PyTorch's
  default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) on linear biases, BatchNorm gamma 1 and beta 0;
  BatchNorm momentum 0.1 in PyTorch terms (Flax `momentum=0.9`), eps 1e-5.

Padding: the 3x3 convolutions pad 1 pixel on every side, as PyTorch's `padding=1`. At stride 1
this is 'SAME'; at stride 2 on an even size XLA's 'SAME' would pad (0, 1) instead and centre the
windows on the odd pixels, out of line with PyTorch and with the option-A shortcut's
`x[:, ::2, ::2]` (the even pixels).

Parameters are float32; `dtype` is the computation dtype of convolutions and BatchNorm.

BatchNorm is `ltx.models.batch_norm.BatchNorm`: PyTorch's unbiased running-variance update by
default (`bn_unbiased=False` on the modules gives flax's biased one), and a `mask` [B] so that a
padded last batch of an epoch normalises as the smaller batch alone. Every module takes
`__call__(x, *, train, mask=None)`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models.batch_norm import BatchNorm
from ltx.models.initializers import kaiming_normal

BN_MOMENTUM = 0.9  # Flax convention: running = momentum * running + (1 - momentum) * batch.
BN_EPSILON = 1e-5
_PAD1 = ((1, 1), (1, 1))


def materialize(x: jax.Array) -> jax.Array:
    """`x` unchanged; on XLA:CPU behind an optimization barrier, so the program keeps it whole.

    Without the barrier XLA:CPU fuses each ReLU (and the BatchNorm before it) into all of its
    consumers, the transposes that feed the weight-gradient convolutions among them, and
    recomputes that chain once per consumer in the backward pass. Materialising every ReLU output
    made the CIFAR ResNet-32 train step 1.49x faster with one expert, 1.48x with BalPoE's three
    and 1.27x with RIDE's (batch 128, 2 cores, median of 5 alternating rounds in one process).
    Results are the same up to the order of float32 sums inside fused reductions (a few ulp;
    after one full ResNet-32 step no parameter differed). Other backends fuse differently and are
    left as they are.
    """
    if jax.default_backend() != "cpu":
        return x
    return jax.lax.optimization_barrier(x)


def relu(x: jax.Array) -> jax.Array:
    """ReLU, its output materialised on CPU (`materialize`)."""
    return materialize(nn.relu(x))


# Output positions up to which a convolution runs as one matrix product on CPU (`small_conv`).
SMALL_CONV_POSITIONS = 4


def small_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
               dimension_numbers=None, **kwargs):
    """`lax.conv_general_dilated` of `nn.Conv` (NHWC images [N, H, W, Cin], HWIO kernel
    [kh, kw, Cin, Cout]); on XLA:CPU, where the output has at most SMALL_CONV_POSITIONS
    positions, the same convolution as one matrix product: the kh * kw shifted (strided)
    windows of the padded input side by side [N, Ho, Wo, kh * kw * Cin] times the kernel
    [kh * kw * Cin, Cout].

    XLA:CPU's convolutions of 2x2 outputs (digits-LT's last stage: 8x8 inputs, strides 1, 2, 2)
    take 7x longer, forward and backward, than this product (64 channels, batch 64: 4.5 ms vs
    0.66 ms), and made up most of the default job's train step; at 4x4 and larger the
    convolution is as fast or faster, so CIFAR and ImageNet inputs keep it. The two differ by the
    order of float32 sums (about 1e-7 relative).
    """
    dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if isinstance(padding, str) or dilated or lhs.ndim != 4:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers, **kwargs)
    kh, kw, cin, cout = rhs.shape
    (sh, sw), (pt, pb), (pl, pr) = window_strides, *padding
    out_h = (lhs.shape[1] + pt + pb - kh) // sh + 1
    out_w = (lhs.shape[2] + pl + pr - kw) // sw + 1
    if (jax.default_backend() != "cpu" or kwargs.get("feature_group_count", 1) != 1
            or out_h * out_w > SMALL_CONV_POSITIONS or lhs.shape[-1] != cin):
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers, **kwargs)
    padded = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    windows = [padded[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw, :]
               for i in range(kh) for j in range(kw)]
    return jnp.concatenate(windows, -1) @ rhs.reshape(kh * kw * cin, cout)


def conv3x3(features: int, stride: int = 1, *, dtype: Any = jnp.float32, name: str | None = None):
    """3x3 convolution, padding 1 (PyTorch `padding=1`), no bias, kaiming-normal init; its
    smallest outputs computed as a matrix product on CPU (`small_conv`)."""
    return nn.Conv(features, (3, 3), strides=(stride, stride), padding=_PAD1, use_bias=False,
                   kernel_init=kaiming_normal, dtype=dtype, param_dtype=jnp.float32, name=name,
                   conv_general_dilated=small_conv)


def batch_norm(train: bool, *, dtype: Any = jnp.float32, name: str | None = None,
               zero_scale: bool = False, unbiased: bool = True) -> BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 == Flax 0.9, eps 1e-5, gamma 1, beta 0,
    the unbiased running variance unless `unbiased=False`); call it as `bn(x, mask)`.

    `zero_scale` starts gamma at 0 (torchvision's `zero_init_residual`, on a block's last BN).
    """
    return BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                     unbiased_running_var=unbiased, dtype=dtype, param_dtype=jnp.float32,
                     name=name,
                     scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones)


def option_a_shortcut(x: jax.Array, planes: int, stride: int) -> jax.Array:
    """Parameter-free shortcut: [B, H, W, Cin] -> [B, H/stride, W/stride, planes].

    Subsamples `x[:, ::stride, ::stride, :]` when stride != 1, then zero-pads the channel axis by
    (planes - Cin) // 2 on each side. Raises ValueError when planes - Cin is negative or odd (the
    symmetric padding could not reach `planes` channels).
    """
    in_planes = x.shape[-1]
    extra = planes - in_planes
    if extra < 0 or extra % 2:
        raise ValueError(
            f"option-A shortcut cannot map {in_planes} channels to {planes}: it pads "
            f"(planes - in_planes) // 2 zero channels on each side, so planes - in_planes must be "
            f"even and >= 0, got {extra}")
    if stride != 1:
        x = x[:, ::stride, ::stride, :]
    if extra:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra // 2)))
    return x


class Stem(nn.Module):
    """conv3x3 (stride 1, no bias) -> BN -> ReLU: [B, H, W, Cin] -> [B, H, W, width]."""

    width: int = 16
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        x = conv3x3(self.width, dtype=self.dtype, name="conv")(jnp.asarray(x, self.dtype))
        x = batch_norm(train, dtype=self.dtype, name="bn", unbiased=self.bn_unbiased)(x, mask)
        return relu(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an option-A shortcut: [B, H, W, Cin] -> [B, H/s, W/s, planes]."""

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        in_planes = x.shape[-1]
        bn = functools.partial(batch_norm, train, dtype=self.dtype, unbiased=self.bn_unbiased)
        y = conv3x3(self.planes, self.stride, dtype=self.dtype, name="conv1")(x)
        y = relu(bn(name="bn1")(y, mask))
        y = conv3x3(self.planes, dtype=self.dtype, name="conv2")(y)
        y = bn(name="bn2")(y, mask)
        if self.stride != 1 or in_planes != self.planes:
            shortcut = option_a_shortcut(x, self.planes, self.stride)
        else:
            shortcut = x
        return relu(y + shortcut.astype(y.dtype))


class ResNetStage(nn.Module):
    """`num_blocks` BasicBlocks, the first with `stride`.

    [B, H, W, Cin] -> [B, H/s, W/s, planes].
    """

    planes: int
    num_blocks: int = 5
    stride: int = 1
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.num_blocks):
            x = BasicBlock(self.planes, self.stride if i == 0 else 1, dtype=self.dtype,
                           bn_unbiased=self.bn_unbiased, name=f"block{i}")(x, train=train,
                                                                            mask=mask)
        return x
