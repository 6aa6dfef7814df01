"""ImageNet-style transforms for variable-size images (NumPy + Pillow).

Training images of ImageNet-LT, iNaturalist 2018 and Places-LT come in every size, so each
transform here ends in a fixed `crop_size` square. Train transforms take
`(image uint8 [H, W, C], np.random.Generator)` like `augment.Transform`; the eval transform is
deterministic and takes the image alone. All randomness comes from the generator.

What the references do (docs/shared.md, docs/methods/balpoe.md), and what `make_train_transform`
builds:
  * standard schedule (RIDE, SADE, BalPoE, CBE): RandomResizedCrop(224) -> RandomHorizontalFlip
    -> ColorJitter(0.4, 0.4, 0.4, 0);
  * BalPoE long schedule: the same with RandomResizedCrop scale (0.08, 1) spelled out, followed
    by RandAugment 'rand-n2-m10-mstd0.5' (timm-style, see `rand_augment`);
  * test: Resize(256) (shorter side) -> CenterCrop(224).
Resizing is Pillow bilinear (with Pillow's antialiasing), as torchvision does on PIL images.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from ltx.data import augment

EvalTransform = Callable[[np.ndarray], np.ndarray]

# ------------------------------------------------------------------------------------- geometry


def _resize(pil: Image.Image, width: int, height: int) -> Image.Image:
    if pil.size == (width, height):
        return pil
    return pil.resize((width, height), Image.Resampling.BILINEAR)


def crop_box(height: int, width: int, rng: np.random.Generator, *,
             scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop window, as torchvision draws it.

    Up to 10 tries of an area fraction uniform in `scale` and a log-uniform aspect ratio (w / h)
    in `ratio`; the first window that fits is placed uniformly. If none fits, the centred
    window of the whole image clamped to the ratio range is used.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, *, size: int,
                        scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop(size, scale, ratio) on one image.

    Args:
      image: uint8 [H, W, C], C = 1 or 3, any H and W.
      rng: source of the window.
      size: side of the square output.
      scale: range of the window's area as a fraction of the image's.
      ratio: range of the window's aspect ratio w / h.

    Returns:
      uint8 [size, size, C]: the window, resized bilinearly.
    """
    augment._check_image(image, "random_resized_crop")
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"random_resized_crop scale={tuple(scale)}, ratio={tuple(ratio)}; "
                         "expected 0 < low <= high for both")
    top, left, h, w = crop_box(image.shape[0], image.shape[1], rng, scale=scale, ratio=ratio)
    window = augment._to_pil(np.ascontiguousarray(image[top:top + h, left:left + w]))
    return augment._from_pil(_resize(window, size, size), image.shape[-1])


def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize(size) with an int: the shorter side becomes `size`.

    The longer side becomes int(size * long / short) (truncated, as torchvision computes it).
    """
    augment._check_image(image, "resize_shorter")
    h, w = image.shape[:2]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return augment._from_pil(_resize(augment._to_pil(image), new_w, new_h), image.shape[-1])


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's CenterCrop(size): offsets round((H - size) / 2), round((W - size) / 2)."""
    augment._check_image(image, "center_crop", channels=None)
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"center_crop({size}) of an image of shape {image.shape}; resize it "
                         "first (the eval resize must be >= the crop size)")
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def make_eval_transform(*, resize: int = 256, crop_size: int = 224) -> EvalTransform:
    """The references' test transform: Resize(resize) (shorter side) -> CenterCrop(crop_size)."""
    if resize < crop_size:
        raise ValueError(f"eval resize={resize} < crop_size={crop_size}")

    def transform(image: np.ndarray) -> np.ndarray:
        return center_crop(resize_shorter(image, resize), crop_size)

    return transform


# ----------------------------------------------------------------------------------- colour


def _adjust_hue(pil: Image.Image, shift: float) -> Image.Image:
    # Rotate the hue channel of HSV by shift * 255 with uint8 wrap-around, like torchvision's
    # PIL path. Grey images have no hue.
    if pil.mode != "RGB":
        return pil
    h, s, v = pil.convert("HSV").split()
    hue = (np.asarray(h, np.uint8) + np.uint8(int(shift * 255) % 256)).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


def color_jitter(image: np.ndarray, rng: np.random.Generator, *, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.0
                 ) -> np.ndarray:
    """torchvision's ColorJitter(brightness, contrast, saturation, hue).

    A random order of the four adjustments is drawn, then one factor per enabled adjustment:
    brightness, contrast and saturation uniform in [max(0, 1 - s), 1 + s] (Pillow's
    ImageEnhance Brightness, Contrast and Color), hue uniform in [-hue, hue]. A strength of 0
    turns its adjustment off; all zeros return the image unchanged.

    Args:
      image: uint8 [H, W, C], C = 1 or 3.
      rng: source of the order and factors.

    Returns:
      uint8 [H, W, C].
    """
    augment._check_image(image, "color_jitter")
    for name, value in (("brightness", brightness), ("contrast", contrast),
                        ("saturation", saturation)):
        if not value >= 0:
            raise ValueError(f"color_jitter {name}={value}; expected >= 0")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"color_jitter hue={hue}; expected 0 <= hue <= 0.5")
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    strengths = (brightness, contrast, saturation, hue)
    if not any(strengths):
        return image
    order = rng.permutation(4)
    factors = [rng.uniform(max(0.0, 1 - s), 1 + s) if s else None for s in strengths[:3]]
    factors.append(rng.uniform(-hue, hue) if hue else None)
    pil = augment._to_pil(image)
    for k in order:
        if factors[k] is None:
            continue
        pil = (_adjust_hue(pil, factors[k]) if k == 3
               else enhancers[k](pil).enhance(float(factors[k])))
    return augment._from_pil(pil, image.shape[-1])


def random_grayscale(image: np.ndarray, rng: np.random.Generator, *, p: float = 0.2
                     ) -> np.ndarray:
    """torchvision's RandomGrayscale(p): with probability p, Pillow's luma
    (0.299 R + 0.587 G + 0.114 B) in every channel; a 1-channel image is returned as is.

    Args:
      image: uint8 [H, W, C], C = 1 or 3.
      rng: source of the coin flip (drawn for every image, as torchvision does).

    Returns:
      uint8 [H, W, C].
    """
    augment._check_image(image, "random_grayscale")
    if not 0 <= p <= 1:
        raise ValueError(f"random_grayscale p={p}; expected 0 <= p <= 1")
    if rng.random() >= p or image.shape[-1] == 1:
        return image
    luma = np.asarray(augment._to_pil(image).convert("L"), np.uint8)
    return np.repeat(luma[..., None], 3, axis=-1)


def gaussian_blur(image: np.ndarray, rng: np.random.Generator, *,
                  sigma: Sequence[float] = (0.1, 2.0)) -> np.ndarray:
    """SimCLR's GaussianBlur as SADE's and MoCo's code write it: Pillow's
    ImageFilter.GaussianBlur with a radius (Pillow's standard deviation) uniform in `sigma`.

    Args:
      image: uint8 [H, W, C], C = 1 or 3.
      rng: source of the radius.
      sigma: (low, high) of the radius in pixels.

    Returns:
      uint8 [H, W, C].
    """
    augment._check_image(image, "gaussian_blur")
    if not 0 <= sigma[0] <= sigma[1]:
        raise ValueError(f"gaussian_blur sigma={tuple(sigma)}; expected 0 <= low <= high")
    radius = float(rng.uniform(sigma[0], sigma[1]))
    pil = augment._to_pil(image).filter(ImageFilter.GaussianBlur(radius=radius))
    return augment._from_pil(pil, image.shape[-1])


# ------------------------------------------------------------------------------- RandAugment

# timm's default RandAugment operations (its `_RAND_TRANSFORMS`, no Cutout), which the
# references' 'rand-n2-m10-mstd0.5' string selects.
RAND_AUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                    "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX",
                    "ShearY", "TranslateXRel", "TranslateYRel")
_MAX_MAGNITUDE = 10.0
# Fill of geometric ops: the ImageNet mean in 0..255, as the references pass to timm.
RAND_AUGMENT_FILL = tuple(min(255, round(255 * m)) for m in augment.IMAGENET_MEAN)


def _rand_op(pil: Image.Image, name: str, magnitude: float, rng: np.random.Generator,
             fill: tuple[int, ...]) -> Image.Image:
    """One RandAugment operation at magnitude 0..10 (timm's level-to-argument maps)."""
    frac = magnitude / _MAX_MAGNITUDE
    sign = 1.0
    if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        sign = -1.0 if rng.random() > 0.5 else 1.0
        resample = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)[int(rng.integers(2))]
    if name in augment.NO_ARGUMENT_OPS:
        return augment.NO_ARGUMENT_OPS[name](pil)
    if name == "Rotate":
        return pil.rotate(sign * 30.0 * frac, resample=resample, fillcolor=fill)
    if name == "Posterize":  # Keeps int(4 * frac) bits: 4 at m=10, 0 (black) at m < 2.5.
        # A mask table, not ImageOps.posterize, which recent Pillow refuses for 0 bits.
        mask = (0xFF << (8 - int(4 * frac))) & 0xFF
        return pil.point([i & mask for i in range(256)] * len(pil.getbands()))
    if name == "Solarize":  # Threshold int(256 * frac): no-op at m=10.
        return ImageOps.solarize(pil, int(256 * frac))
    if name == "SolarizeAdd":  # Adds int(110 * frac) to pixels below 128, clipped at 255.
        add = int(110 * frac)
        lut = [min(255, i + add) if i < 128 else i for i in range(256)]
        return pil.point(lut * len(pil.getbands()))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, name)(pil).enhance(1.8 * frac + 0.1)
    w, h = pil.size
    matrix = {"ShearX": (1, sign * 0.3 * frac, 0, 0, 1, 0),
              "ShearY": (1, 0, 0, sign * 0.3 * frac, 1, 0),
              "TranslateXRel": (1, 0, sign * 0.45 * frac * w, 0, 1, 0),
              "TranslateYRel": (1, 0, 0, 0, 1, sign * 0.45 * frac * h)}[name]
    return pil.transform(pil.size, Image.Transform.AFFINE, matrix, resample=resample,
                         fillcolor=fill)


def rand_augment(image: np.ndarray, rng: np.random.Generator, *, num_ops: int = 2,
                 magnitude: float = 10.0, magnitude_std: float = 0.5, prob: float = 0.5,
                 fill: tuple[int, ...] = RAND_AUGMENT_FILL) -> np.ndarray:
    """timm-style RandAugment ('rand-n{num_ops}-m{magnitude}-mstd{magnitude_std}').

    `num_ops` operations are drawn uniformly with replacement from `RAND_AUGMENT_OPS`; each is
    applied with probability `prob`, at a magnitude drawn from N(magnitude, magnitude_std)
    clipped to [0, 10]. Argument per magnitude fraction f = m / 10: Rotate 30 f degrees, ShearX/Y
    0.3 f, TranslateX/YRel 0.45 f of the side (these four with a random sign, bilinear or
    bicubic resampling at random, `fill` outside the image); Color/Contrast/Brightness/Sharpness
    factor 1.8 f + 0.1 (no sign); Posterize keeps int(4 f) bits; Solarize threshold int(256 f);
    SolarizeAdd adds int(110 f) below 128; AutoContrast, Equalize, Invert take none.

    Args:
      image: uint8 [H, W, 3].
      rng: source of every choice.

    Returns:
      uint8 [H, W, 3].
    """
    augment._check_image(image, "rand_augment", channels=(3,))
    if not 0 <= magnitude <= _MAX_MAGNITUDE or magnitude_std < 0:
        raise ValueError(f"rand_augment magnitude={magnitude}, magnitude_std={magnitude_std}; "
                         "expected 0 <= magnitude <= 10 and magnitude_std >= 0")
    pil = augment._to_pil(image)
    for k in rng.integers(len(RAND_AUGMENT_OPS), size=num_ops):
        if rng.random() > prob:
            continue
        m = rng.normal(magnitude, magnitude_std) if magnitude_std > 0 else magnitude
        m = float(np.clip(m, 0.0, _MAX_MAGNITUDE))
        pil = _rand_op(pil, RAND_AUGMENT_OPS[int(k)], m, rng, fill)
    return augment._from_pil(pil, 3)


# ------------------------------------------------------------------------------ composition


def make_train_transform(*, crop_size: int = 224, scale: Sequence[float] = (0.08, 1.0),
                         ratio: Sequence[float] = (3 / 4, 4 / 3), flip: bool = True,
                         color_jitter_strength: Sequence[float] = (0.4, 0.4, 0.4, 0.0),
                         randaugment: bool = False, randaugment_ops: int = 2,
                         randaugment_magnitude: float = 10.0,
                         randaugment_magnitude_std: float = 0.5) -> augment.Transform:
    """Builds `fn(image uint8 [H, W, C], rng) -> uint8 [crop_size, crop_size, C]`.

    Steps in order: random_resized_crop(crop_size, scale, ratio); random_flip if `flip`;
    color_jitter(*color_jitter_strength) (brightness, contrast, saturation, hue; all zeros
    skip it); rand_augment if `randaugment` (after the jitter, as BalPoE's long schedule).
    """
    if int(crop_size) != crop_size or crop_size <= 0:
        raise ValueError(f"crop_size={crop_size!r}; expected a positive integer")
    if len(color_jitter_strength) != 4:
        raise ValueError(f"color_jitter={tuple(color_jitter_strength)}; expected (brightness, "
                         "contrast, saturation, hue)")
    crop_size, flip, randaugment = int(crop_size), bool(flip), bool(randaugment)
    scale, ratio = tuple(map(float, scale)), tuple(map(float, ratio))
    brightness, contrast, saturation, hue = map(float, color_jitter_strength)

    def transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = random_resized_crop(image, rng, size=crop_size, scale=scale, ratio=ratio)
        if flip:
            image = augment.random_flip(image, rng)
        image = color_jitter(image, rng, brightness=brightness, contrast=contrast,
                             saturation=saturation, hue=hue)
        if randaugment:
            image = rand_augment(image, rng, num_ops=randaugment_ops,
                                 magnitude=randaugment_magnitude,
                                 magnitude_std=randaugment_magnitude_std)
        return image

    return transform
