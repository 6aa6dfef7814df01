"""Training augmentation as batched array code inside the jitted train step (in-memory datasets).

With `config.data.augment.on_device=True` (these datasets' default) the training images of an
in-memory dataset (digits-LT, CIFAR-10/100-LT) live on every device as one uint8 array
[N, H, W, C] in split order; the host pipeline only yields the step's positions into it
(`pipeline.train_index_dataset`: epochs padded, masked and sharded as the host path's, in another
order, resumable from the batch number), and the step gathers the batch and augments it here.
Every random draw comes from the step's key and covers the global batch, so a batch is the same
on any number of devices or hosts and after a resume.

Every augmentation of the 'cifar' kind runs on device, in the host path's order: RandomCrop(H,
padding) with zero padding, RandomHorizontalFlip, the AutoAugment CIFAR-10 policy and
RandomRotation (`ltx.data.device_autoaugment`), then normalisation; Mixup runs in the step as
on the host path. The crop and flip are index arithmetic (one gather per axis), which XLA:CPU
runs at about 4x the speed of a per-image dynamic slice.

For equal random parameters the crop, flip and normalisation equal the host path's
`augment.random_crop`, `augment.random_flip` and `augment.normalize` exactly, and the AutoAugment
operations and the rotation equal Pillow's up to rare one-level (or one-pixel) rounding
differences (see `device_autoaugment`); the parameters themselves come from JAX's generator,
not NumPy's, so the two paths draw different, equally distributed augmentations.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ltx.data import device_autoaugment

# The datasets whose training split is an in-memory `splits.ArraySource`.
IN_MEMORY_DATASETS = ("digits_lt", "cifar10_lt", "cifar100_lt")

BatchAugment = Callable[[jax.Array, jax.Array], jax.Array]


def unsupported(aug_config, dataset_name: str) -> list[str]:
    """The reasons `config.data.augment` cannot run on device (empty when it can), each naming
    the key, its value and what is expected."""
    problems = []
    if dataset_name not in IN_MEMORY_DATASETS:
        problems.append(f"config.data.name={dataset_name!r} with data.augment.on_device=True; "
                        f"expected an in-memory dataset {IN_MEMORY_DATASETS} (list-file "
                        "datasets decode on the host)")
    kind = aug_config.get("kind", "cifar")
    if kind != "cifar":
        problems.append(f"config.data.augment.kind={kind!r} with on_device=True; expected "
                        "'cifar'")
    return problems


def draw_crop_flip(key: jax.Array, batch: int, *, padding: int, flip: bool
                   ) -> tuple[jax.Array, jax.Array]:
    """Random parameters of a batch: (offsets int32 [B, 2] = (top, left) uniform in
    0..2*padding, flips bool [B] with probability 0.5 when `flip`)."""
    offset_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(offset_key, (batch, 2), 0, 2 * padding + 1, jnp.int32)
    flips = (jax.random.bernoulli(flip_key, 0.5, (batch,)) if flip
             else jnp.zeros((batch,), bool))
    return offsets, flips


def crop_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array, *, padding: int
              ) -> jax.Array:
    """Zero-padded random crop, then horizontal flip, of a batch.

    Args:
      images: [B, H, W, C] (any dtype; zeros fill the padding).
      offsets: int [B, 2], the window's (top, left) in the padded image, 0..2*padding.
      flips: bool [B], mirror the cropped image left-right.
      padding: pixels of zeros on each side.

    Returns:
      [B, H, W, C], row b equal to `random_flip(random_crop(images[b]))` of `ltx.data.augment`
      with these parameters.
    """
    _, h, w, _ = images.shape
    rows = jnp.arange(h)[None, :] + offsets[:, :1] - padding            # [B, H] source rows
    columns = jnp.arange(w)[None, :]
    columns = jnp.where(flips[:, None], w - 1 - columns, columns) + offsets[:, 1:] - padding
    inside = (((rows >= 0) & (rows < h))[:, :, None, None]
              & ((columns >= 0) & (columns < w))[:, None, :, None])
    out = jnp.take_along_axis(images, jnp.clip(rows, 0, h - 1)[:, :, None, None], axis=1)
    out = jnp.take_along_axis(out, jnp.clip(columns, 0, w - 1)[:, None, :, None], axis=2)
    return jnp.where(inside, out, jnp.zeros((), images.dtype))


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 [..., C] -> float32 (x / 255 - mean) / std, as `ltx.data.augment.normalize`."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def make_batch_augment(aug_config, *, mean: Sequence[float], std: Sequence[float]
                       ) -> BatchAugment:
    """`fn(key, images uint8 [B, H, W, C]) -> float32 [B, H, W, C]`: the host path's order,
    crop, flip, AutoAugment (RGB only), rotation, then normalisation."""
    kind = aug_config.get("kind", "cifar")
    if kind != "cifar":  # `unsupported` names the dataset too, for the config check.
        raise ValueError(f"config.data.augment.kind={kind!r} with on_device=True; expected "
                         "'cifar'")
    padding = int(aug_config.get("crop_padding", 0))
    flip = bool(aug_config.get("flip", False))
    policy = bool(aug_config.get("autoaugment", False))
    rotation = float(aug_config.get("rotation", 0.0))
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def batch_augment(key, images):
        crop_key, policy_key, rotation_key = jax.random.split(key, 3)
        batch = images.shape[0]
        if padding or flip:
            offsets, flips = draw_crop_flip(crop_key, batch, padding=padding, flip=flip)
            images = crop_flip(images, offsets, flips, padding=padding)
            if policy or rotation:  # Materialised: fused into their gathers it is recomputed.
                images = jax.lax.optimization_barrier(images)
        if policy:
            if images.shape[-1] != 3:
                raise ValueError(f"AutoAugment's CIFAR policy needs RGB images; got "
                                 f"{images.shape[-1]} channel(s)")
            images = jax.lax.optimization_barrier(device_autoaugment.autoaugment(
                images, *device_autoaugment.draw_policy(policy_key, batch)))
        if rotation:
            angles = device_autoaugment.rotation_angles(rotation_key, batch, rotation)
            images = device_autoaugment.rotate(images, angles, jnp.zeros((images.shape[-1],)))
        return normalize(images, mean, std)

    return batch_augment
