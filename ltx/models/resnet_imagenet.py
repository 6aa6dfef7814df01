"""ImageNet-style ResNet / ResNeXt building blocks (ResNet-10/50/152, ResNeXt-50 32x4d), NHWC.

Follows the ResNet of the official RIDE code (`model/fb_resnets/*ResNet*.py`, from OLTR and
classifier-balancing), which SADE and BalPoE reuse for their ImageNet-LT, iNaturalist and Places
experts (docs/methods/ride.md, docs/methods/sade.md, docs/methods/balpoe.md), and which has
torchvision's layout:

- stem: conv7x7 (3 -> 64, stride 2, padding 3, no bias) -> BN -> ReLU -> max pool 3x3, stride 2,
  padding 1 (padded with -inf, as PyTorch);
- BasicBlock (ResNet-10, expansion 1): conv3x3 (stride s) -> BN -> ReLU -> conv3x3 -> BN,
  + shortcut, -> ReLU;
- Bottleneck (ResNet-50/152, ResNeXt-50, expansion 4): conv1x1 -> BN -> ReLU -> conv3x3 (stride s,
  `groups` groups) -> BN -> ReLU -> conv1x1 (-> 4 * planes) -> BN, + shortcut, -> ReLU. The stride
  is on the 3x3 convolution (the references' and torchvision's "v1.5" placement, not the original
  Caffe one on the first 1x1). Inner width `int(planes * width_per_group / 64) * groups`: `planes`
  for ResNet, 2 * planes for ResNeXt 32x4d (RIDE's `int(planes * 4 / 64) * 32`);
- projection shortcut (conv1x1 with the block's stride, no bias, -> BN) whenever the stride is not
  1 or the channel count changes; the identity otherwise;
- stage i has `planes[i]` planes, stride 1 for the first stage and 2 for the others;
- init: convolutions N(0, 2 / (k * k * out_channels)) (kaiming normal, fan_out, untruncated, as
  RIDE's `normal_(0, sqrt(2 / n))` and torchvision); BatchNorm gamma 1, beta 0; BatchNorm momentum
  0.1 in PyTorch terms (Flax 0.9), eps 1e-5, PyTorch's unbiased running variance
  (`ltx.models.batch_norm`). No zero-init of the last BN gamma by default (the
  references do not; `zero_init_residual=True` gives torchvision's option). The classifier is an
  `nn.Linear` with PyTorch's default init (see `ltx.models.heads`, `linear_init='torch'`).

Padding is PyTorch's explicit padding (k // 2 on every side), so strided convolutions sample the
same pixels as the references.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models.initializers import kaiming_normal_fan_out
from ltx.models.resnet_cifar import batch_norm, relu

EXPANSION = {"basic": 1, "bottleneck": 4}  # output channels / planes
STEM_WIDTH = 64


def conv(features: int, kernel: int, stride: int = 1, *, groups: int = 1, dtype: Any = jnp.float32,
         name: str | None = None) -> nn.Conv:
    """k x k convolution, PyTorch padding k // 2, no bias, kaiming-normal fan_out init."""
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=False,
                   kernel_init=kaiming_normal_fan_out, dtype=dtype, param_dtype=jnp.float32,
                   name=name)


class ImageNetStem(nn.Module):
    """conv7x7/2 -> BN -> ReLU -> max pool 3x3/2: [B, H, W, 3] -> [B, H/4, W/4, width]."""

    width: int = STEM_WIDTH
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        x = conv(self.width, 7, 2, dtype=self.dtype, name="conv")(jnp.asarray(x, self.dtype))
        x = relu(batch_norm(train, dtype=self.dtype, name="bn",
                               unbiased=self.bn_unbiased)(x, mask))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class Shortcut(nn.Module):
    """Identity, or conv1x1 (stride s) -> BN when the stride or the channel count changes."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        if self.stride == 1 and x.shape[-1] == self.features:
            return x
        x = conv(self.features, 1, self.stride, dtype=self.dtype, name="conv")(x)
        return batch_norm(train, dtype=self.dtype, name="bn", unbiased=self.bn_unbiased)(x, mask)


class ImageNetBasicBlock(nn.Module):
    """Two 3x3 convolutions + projection shortcut: [B, H, W, Cin] -> [B, H/s, W/s, planes]."""

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        bn = functools.partial(batch_norm, train, dtype=self.dtype, unbiased=self.bn_unbiased)
        y = conv(self.planes, 3, self.stride, dtype=self.dtype, name="conv1")(x)
        y = relu(bn(name="bn1")(y, mask))
        y = conv(self.planes, 3, dtype=self.dtype, name="conv2")(y)
        y = bn(zero_scale=self.zero_init_residual, name="bn2")(y, mask)
        shortcut = Shortcut(self.planes, self.stride, dtype=self.dtype,
                            bn_unbiased=self.bn_unbiased, name="shortcut")(x, train=train,
                                                                           mask=mask)
        return relu(y + shortcut.astype(y.dtype))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride s, grouped) -> 1x1 (x4), + shortcut: [B, H, W, Cin] -> [.., 4 * planes].

    Inner width `int(planes * width_per_group / 64) * groups` (ResNet: planes). With
    `stride_on_1x1` the stride is on the first 1x1 convolution instead, as in the original Caffe
    ResNets (torchvision's v1.5 puts it on the 3x3): the layout of Caffe-converted weights, such
    as the `caffe_resnet152` that OLTR-derived Places-LT code starts from.
    """

    planes: int
    stride: int = 1
    groups: int = 1
    width_per_group: int = 64
    zero_init_residual: bool = False
    stride_on_1x1: bool = False
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        width = int(self.planes * self.width_per_group / 64) * self.groups
        out = self.planes * EXPANSION["bottleneck"]
        first, second = (self.stride, 1) if self.stride_on_1x1 else (1, self.stride)
        bn = functools.partial(batch_norm, train, dtype=self.dtype, unbiased=self.bn_unbiased)
        y = conv(width, 1, first, dtype=self.dtype, name="conv1")(x)
        y = relu(bn(name="bn1")(y, mask))
        y = conv(width, 3, second, groups=self.groups, dtype=self.dtype, name="conv2")(y)
        y = relu(bn(name="bn2")(y, mask))
        y = conv(out, 1, dtype=self.dtype, name="conv3")(y)
        y = bn(zero_scale=self.zero_init_residual, name="bn3")(y, mask)
        shortcut = Shortcut(out, self.stride, dtype=self.dtype, bn_unbiased=self.bn_unbiased,
                            name="shortcut")(x, train=train, mask=mask)
        return relu(y + shortcut.astype(y.dtype))


class ImageNetStage(nn.Module):
    """`num_blocks` blocks, the first with `stride`: [B, H, W, Cin] -> [B, H/s, W/s, C_out].

    `block` makes one block as `block(planes, stride, name=...)`: `Bottleneck` or
    `ImageNetBasicBlock`, or a `functools.partial` of one with its other attributes.
    """

    planes: int
    num_blocks: int
    stride: int = 1
    block: Callable[..., nn.Module] = Bottleneck

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.num_blocks):
            x = self.block(self.planes, self.stride if i == 0 else 1,
                           name=f"block{i}")(x, train=train, mask=mask)
        return x

BLOCKS = {"basic": ImageNetBasicBlock, "bottleneck": Bottleneck}
BLOCK_KINDS = tuple(BLOCKS)
NUM_STAGES = 4
STRIDES = (1, 2, 2, 2)

# Architecture name -> block kind, blocks per stage, groups and width per group of the 3x3 conv.
ARCHITECTURES = {
    "resnet10": dict(block="basic", blocks=(1, 1, 1, 1), groups=1, width_per_group=64),
    "resnet50": dict(block="bottleneck", blocks=(3, 4, 6, 3), groups=1, width_per_group=64),
    "resnet152": dict(block="bottleneck", blocks=(3, 8, 36, 3), groups=1, width_per_group=64),
    "resnext50_32x4d": dict(block="bottleneck", blocks=(3, 4, 6, 3), groups=32,
                            width_per_group=4),
}
