"""Rotation and the AutoAugment CIFAR-10 policy as batched array code (augmentation on device).

The host path (`ltx.data.augment`) runs Pillow on one image at a time; these functions compute
what Pillow computes, for a batch, from explicit random parameters:

- nearest-neighbour affine maps (RandomRotation, AutoAugment's Rotate) use Pillow's 16.16 fixed
  point arithmetic (`affine_fixed` in Pillow's Geometry.c): input pixel
  `(FIX(c + a/2 + b/2) + x FIX(a) + y FIX(b)) >> 16`;
- translations take Pillow's scaling path: `floor(x + 0.5 + t)`, -1 (outside) below zero;
- shears are Pillow's bicubic transform (the a = -1 cubic, edge pixels clamped, truncated to
  uint8);
- Color, Contrast, Brightness and Sharpness are `Image.blend(degenerate, image, factor)`:
  `degenerate + factor (image - degenerate)` in float32, clipped and truncated; the degenerate
  images are Pillow's (ITU-R 601 luma in 16-bit fixed point; its rounded mean; black; the
  3x3 SMOOTH filter with the border kept);
- Posterize, Solarize, Invert, AutoContrast and Equalize are Pillow's lookup tables, built per
  image and channel from its histogram.

Pillow computes coordinates and blends in double or float32 in its own order; these use float32
in XLA's, so a value that lands within rounding error of an integer may come out one grey level
(or one pixel, for a coordinate) apart. tests/test_device_autoaugment.py checks every operation
against the host path on the same parameters: identical except for such rare pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.data import augment

# A NumPy constant: a jnp array made at import would start JAX's backend, which must wait for
# jax.distributed.initialize() on multi-host runs.
_FILL = np.asarray(augment._AFFINE_FILL, np.float32)  # noqa: SLF001 (the host's constant)
_AXES = (1, 2)  # H, W of [B, H, W, C].

# The operations by family: a step of the policy costs one pass of each family over the batch
# (each image keeps its own operation's result), not one pass per operation.
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
BLENDS = ("Color", "Contrast", "Sharpness", "Brightness")
TABLES = ("Posterize", "Solarize", "Invert", "AutoContrast", "Equalize")
NAMES = GEOMETRIC + BLENDS + TABLES
SIGNED = GEOMETRIC + BLENDS


def _grid(h: int, w: int):
    return jnp.arange(w)[None, None, :], jnp.arange(h)[None, :, None]  # x [1,1,W], y [1,H,1]


def _pixels(images, index):
    """images [B, H, W, C] at flat pixel positions index int [B, H, W] (in 0..H W - 1) ->
    [B, H, W, C]. One scalar gather from the flattened batch: XLA:CPU runs it about 10x faster
    than the equivalent take_along_axis or a gather of C-element rows."""
    b, h, w, c = images.shape
    pixel = jnp.arange(b, dtype=jnp.int32)[:, None, None] * (h * w) + index
    flat = pixel[..., None] * c + jnp.arange(c, dtype=jnp.int32)
    return images.reshape(-1)[flat]


def _gather(images, xin, yin, fill):
    """images [B, H, W, C] at integer coordinates xin, yin [B, H, W]; `fill` [C] outside."""
    _, h, w, _ = images.shape
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    out = _pixels(images, jnp.clip(yin, 0, h - 1) * w + jnp.clip(xin, 0, w - 1))
    return jnp.where(inside[..., None], out, fill.astype(images.dtype))


def _fixed_point_coordinates(matrix, h: int, w: int):
    """Pillow's nearest-neighbour affine map in 16.16 fixed point (`affine_fixed` in its
    Geometry.c): int32 source (x, y) [B, H, W] of every output pixel for matrix [B, 6] =
    (a, b, c, d, e, f), output (x, y) reading input (a x + b y + c, d x + e y + f)."""
    a, b, c, d, e, f = (matrix[:, i, None, None] for i in range(6))

    def fix(v):
        return jnp.floor(v * 65536.0 + 0.5).astype(jnp.int32)

    x, y = _grid(h, w)
    xx = fix(c + a * 0.5 + b * 0.5) + x * fix(a) + y * fix(b)
    yy = fix(f + d * 0.5 + e * 0.5) + x * fix(d) + y * fix(e)
    return jnp.right_shift(xx, 16), jnp.right_shift(yy, 16)


def rotation_matrix(angles, h: int, w: int):
    """float32 [B, 6]: Pillow's `rotate(angle)` matrix about the centre (w / 2, h / 2); positive
    angles turn counter-clockwise."""
    theta = -jnp.deg2rad(angles.astype(jnp.float32))
    a, b = jnp.cos(theta), jnp.sin(theta)
    d, e = -jnp.sin(theta), jnp.cos(theta)
    cx, cy = w / 2.0, h / 2.0
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return jnp.stack([a, b, c, d, e, f], axis=-1)


def rotate(images, angles, fill):
    """Pillow's `rotate(angle, NEAREST, fillcolor=fill)` of each image, angles [B] in degrees
    (torchvision's RandomRotation on PIL images)."""
    _, h, w, _ = images.shape
    return _gather(images, *_fixed_point_coordinates(rotation_matrix(angles, h, w), h, w), fill)


def _cubic(v1, v2, v3, v4, d):
    # Pillow's BICUBIC macro: the a = -1 cubic convolution through v2 (d = 0) and v3 (d = 1).
    return v2 + d * ((v3 - v1) + d * ((2 * (v1 - v2) + v3 - v4) + d * (v2 - v1 - v3 + v4)))


def _geometric(images, kind, magnitude, fill, ops=GEOMETRIC):
    """AutoAugment's geometric operations, kind [B] indexing GEOMETRIC (others: unchanged);
    `ops`: the names `kind` can select (a static subset: the shears' and the rotation's passes
    are skipped when absent).

    Shears are Pillow's bicubic `transform(AFFINE, (1, s, 0, 0, 1, 0))` (ShearX) or
    (1, 0, 0, s, 1, 0) (ShearY); along the unsheared axis the source sits on pixel centres,
    where Pillow's cubic has d = 0 and returns the centre pixel, so only the four taps along the
    sheared axis are read. Translations by magnitude x side take Pillow's scaling path
    (floor(x + 0.5 + t), -1 below zero); Rotate is `rotate`'s fixed-point map.
    """
    b, h, w, ch = images.shape
    x, y = _grid(h, w)
    m = magnitude[:, None, None]
    k = kind[:, None, None]
    unchanged = (k < 0) | (k >= len(GEOMETRIC))

    def coord(v):
        return jnp.where(v < 0, -1, jnp.floor(v)).astype(jnp.int32)

    # Nearest: translations and rotation.
    xin = coord(x + 0.5 + jnp.where(k == 2, m * w, 0.0)) + 0 * y
    yin = coord(y + 0.5 + jnp.where(k == 3, m * h, 0.0)) + 0 * x
    if "Rotate" in ops:
        rx, ry = _fixed_point_coordinates(rotation_matrix(magnitude, h, w), h, w)
        xin, yin = jnp.where(k == 4, rx, xin), jnp.where(k == 4, ry, yin)
    nearest = _gather(images, xin, yin, fill)
    if "ShearX" not in ops and "ShearY" not in ops:
        return jnp.where(unchanged[..., None], images, nearest)
    # Bicubic: the shears.
    along_x = k == 0
    sx = (x + 0.5) + jnp.where(along_x, m, 0.0) * (y + 0.5)
    sy = jnp.where(k == 1, m, 0.0) * (x + 0.5) + (y + 0.5)
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    along = jnp.where(along_x, sx, sy) - 0.5
    start = jnp.floor(along)
    d = (along - start)[..., None]
    start = start.astype(jnp.int32) - 1
    pixels = images.astype(jnp.float32)

    def tap(i):  # The i-th of the four pixels along the sheared axis, clamped to the image.
        return _pixels(pixels, jnp.where(along_x, y * w + jnp.clip(start + i, 0, w - 1),
                                         jnp.clip(start + i, 0, h - 1) * w + x))

    value = jnp.floor(jnp.clip(_cubic(tap(0), tap(1), tap(2), tap(3), d), 0.0, 255.0))
    sheared = jnp.where(inside[..., None], value, fill).astype(jnp.uint8)
    out = jnp.where((k <= 1)[..., None], sheared, nearest)
    return jnp.where(unchanged[..., None], images, out)


def luma(images):
    """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 0x8000) >> 16, int32 [B, H, W]."""
    rgb = images.astype(jnp.int32)
    return jnp.right_shift(rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471
                           + 0x8000, 16)


def smooth(images):
    """Pillow's ImageFilter.SMOOTH (3x3, centre 5, others 1, / 13, rounded); the one-pixel
    border keeps the input. float32 [B, H, W, C]."""
    x = images.astype(jnp.float32)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    total = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) + 4 * x
    out = jnp.floor(jnp.clip(total / 13.0 + 0.5, 0.0, 255.0))
    border = jnp.ones((h, w), bool).at[1:-1, 1:-1].set(False)[None, :, :, None]
    return jnp.where(border, x, out)


def _blend(images, kind, factor):
    """`Image.blend(degenerate, image, factor)` for kind [B] indexing BLENDS (others:
    unchanged): Pillow's ImageEnhance Color (luma), Contrast (the luma's rounded mean),
    Sharpness (SMOOTH) and Brightness (black), in float32, clipped and truncated."""
    k = kind[:, None, None, None]
    x = images.astype(jnp.float32)
    grey = luma(images)
    mean = jnp.floor(jnp.mean(grey.astype(jnp.float32), axis=_AXES) + 0.5)
    degenerate = jnp.where(k == 0, grey[..., None].astype(jnp.float32),
                           jnp.where(k == 1, mean[:, None, None, None],
                                     jnp.where(k == 2, smooth(images), 0.0)))
    # Rounded product, then the sum, as Pillow's C computes it: a fused multiply-add, which XLA
    # would otherwise emit, rounds once and moves some values across an integer.
    product = jax.lax.optimization_barrier(factor[:, None, None, None] * (x - degenerate))
    out = jnp.floor(jnp.clip(degenerate + product, 0.0, 255.0))
    return jnp.where((k >= 0) & (k < len(BLENDS)), out.astype(jnp.uint8), images)


def _histograms(values, rows: int):
    """int32 [rows, 256]: histograms of values int32 [rows, n] (a scatter-add)."""
    bins = (jnp.arange(rows, dtype=jnp.int32)[:, None] * 256 + values).reshape(-1)
    return jnp.zeros((rows * 256,), jnp.int32).at[bins].add(1).reshape(rows, 256)


def _tables(images, kind, magnitude):
    """Pillow's lookup-table operations for kind [B] indexing TABLES (others: unchanged):
    Posterize (keep `magnitude` bits), Solarize (invert values >= magnitude), Invert,
    AutoContrast (stretch each channel's lo..hi to 0..255) and Equalize (Pillow's histogram
    equalisation), one table [256] per image and channel.

    AutoContrast's `int(i * scale + offset)` is Pillow's double arithmetic for
    (i - lo) 255 / (hi - lo); the exact integer division here differs from it by one level in
    0.14% of the (lo, hi, i) entries.
    """
    b, h, w, c = images.shape
    values = images.reshape(b, h * w, c).transpose(0, 2, 1).astype(jnp.int32)  # [B, C, HW]
    levels = jnp.arange(256, dtype=jnp.int32)
    k = kind[:, None, None]
    m = magnitude[:, None, None]
    posterize = jnp.bitwise_and(levels, jnp.left_shift(-1, 8 - m.astype(jnp.int32)))
    solarize = jnp.where(levels < m, levels, 255 - levels)
    lo = jnp.min(values, axis=-1, keepdims=True)
    hi = jnp.max(values, axis=-1, keepdims=True)
    stretch = jnp.clip(((levels - lo) * 255) // jnp.maximum(hi - lo, 1), 0, 255)
    stretch = jnp.where(hi > lo, stretch, levels)
    hist = _histograms(values.reshape(b * c, h * w), b * c).reshape(b, c, 256)
    present = hist > 0
    last = jnp.max(jnp.where(present, levels, -1), axis=-1, keepdims=True)
    last_count = jnp.sum(jnp.where(levels == last, hist, 0), axis=-1, keepdims=True)
    step = (h * w - last_count) // 255
    # Counts below each level, as a float32 matmul (exact for counts < 2^24): XLA:CPU's
    # cumsum over 256 bins is several times slower.
    below = jnp.triu(jnp.ones((256, 256), jnp.float32), k=1)
    before = jnp.dot(hist.astype(jnp.float32), below).astype(jnp.int32)
    equalize = jnp.minimum((step // 2 + before) // jnp.maximum(step, 1), 255)  # Pillow clips.
    equalize = jnp.where((jnp.sum(present, -1, keepdims=True) <= 1) | (step == 0), levels,
                         equalize)
    table = jnp.where(k == 0, posterize, jnp.where(k == 1, solarize, jnp.where(
        k == 2, 255 - levels, jnp.where(k == 3, stretch, equalize))))
    table = jax.lax.optimization_barrier(table)  # Built once, not inside the gather.
    # Image b, channel ch reads table row (b, ch): a flat gather (see `_pixels`).
    rows = (jnp.arange(b * c, dtype=jnp.int32).reshape(b, c, 1) * 256 + values).reshape(-1)
    out = table.reshape(-1)[rows].reshape(b, c, h * w).transpose(0, 2, 1).reshape(b, h, w, c)
    return jnp.where(((kind >= 0) & (kind < len(TABLES)))[:, None, None, None],
                     out.astype(jnp.uint8), images)


def apply_op(images, op, magnitude, fill=_FILL, ops=NAMES):
    """One AutoAugment operation per image: op int [B] indexing NAMES (-1: none), magnitude
    float32 [B]: the signed shear, translation fraction or angle; for the blends Pillow's
    enhance factor 1 +- level (rounded to float32 from double, as Pillow receives it);
    Posterize's bits, Solarize's threshold. One pass of each family; `ops` (static) names the
    operations `op` can select, so the passes none of them needs are skipped."""
    g, bl = len(GEOMETRIC), len(BLENDS)
    # The barriers keep XLA from fusing a family into the next one's gathers, which would
    # recompute it for every gathered pixel (8x slower on XLA:CPU).
    barrier = jax.lax.optimization_barrier
    images = barrier(_geometric(images, jnp.where(op < g, op, -1), magnitude, fill,
                                ops=tuple(o for o in ops if o in GEOMETRIC)))
    images = barrier(_blend(images, jnp.where((op >= g) & (op < g + bl), op - g, -1),
                            magnitude))
    return barrier(_tables(images, jnp.where(op >= g + bl, op - g - bl, -1), magnitude))


POLICY = augment.CIFAR10_POLICY
# Per policy step k: the op index (into NAMES) of every sub-policy, its probability and level.
_STEP_OPS = np.array([[NAMES.index(sub[k][0]) for sub in POLICY] for k in range(2)], np.int32)
_STEP_PROBS = np.array([[sub[k][1] for sub in POLICY] for k in range(2)], np.float32)
_STEP_MAGNITUDES = np.array([[float(augment._LEVELS[sub[k][0]][sub[k][2]])  # noqa: SLF001
                              for sub in POLICY] for k in range(2)], np.float32)
_STEP_NAMES = tuple(tuple(sorted({sub[k][0] for sub in POLICY})) for k in range(2))
_STEP_SIGNED = np.array([[sub[k][0] in SIGNED for sub in POLICY] for k in range(2)])
_STEP_BLEND = np.array([[sub[k][0] in BLENDS for sub in POLICY] for k in range(2)])
# The blends' enhance factors 1 + level and 1 - level, computed in double like the host's.
_STEP_FACTORS = np.stack([1.0 + _STEP_MAGNITUDES.astype(np.float64),
                          1.0 - _STEP_MAGNITUDES.astype(np.float64)]).astype(np.float32)


def draw_policy(key, batch: int):
    """Random parameters of AutoAugment for a batch: (sub-policy int32 [B], applied bool [B, 2],
    negative sign bool [B, 2]), as the host draws them: a uniform sub-policy, each step's coin
    against its probability, a fair sign coin for the signed operations."""
    k_sub, k_apply, k_sign = jax.random.split(key, 3)
    sub = jax.random.randint(k_sub, (batch,), 0, len(POLICY), jnp.int32)
    probs = jnp.asarray(_STEP_PROBS).T[sub]                                # [B, 2]
    applied = jax.random.uniform(k_apply, (batch, 2)) < probs
    negative = jax.random.bernoulli(k_sign, 0.5, (batch, 2))
    return sub, applied, negative


def autoaugment(images, sub, applied, negative):
    """AutoAugment's CIFAR-10 policy on uint8 RGB images [B, H, W, 3] with the parameters of
    `draw_policy`: its two steps, each one `apply_op`."""
    for k in range(2):
        op = jnp.where(applied[:, k], jnp.asarray(_STEP_OPS[k])[sub], -1)
        magnitude = jnp.asarray(_STEP_MAGNITUDES[k])[sub]
        flip = jnp.asarray(_STEP_SIGNED[k])[sub] & negative[:, k]
        magnitude = jnp.where(flip, -magnitude, magnitude)
        factor = jnp.where(flip, jnp.asarray(_STEP_FACTORS[1, k])[sub],
                           jnp.asarray(_STEP_FACTORS[0, k])[sub])
        magnitude = jnp.where(jnp.asarray(_STEP_BLEND[k])[sub], factor, magnitude)
        images = apply_op(images, op, magnitude, ops=_STEP_NAMES[k])
    return images


def rotation_angles(key, batch: int, max_degrees: float):
    """float32 [B], uniform in [-max_degrees, max_degrees]."""
    return jax.random.uniform(key, (batch,), jnp.float32, -max_degrees, max_degrees)
