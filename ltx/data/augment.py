"""Host-side per-example image augmentation for CIFAR-style training (NumPy + Pillow).

Every function takes one uint8 image [H, W, C] and a `np.random.Generator` and returns a uint8
image of the same shape, so a transform slots into grain's `random_map(fn)` where
`fn(example, rng)`. All randomness comes from the generator: the same generator state gives the
same output.

Where the defaults come from:
  * LDAM-DRW (Cao et al. 2019): RandomCrop(32, padding=4) + RandomHorizontalFlip. This is
    `make_train_transform()` with its defaults.
  * RIDE / SADE / BalPoE standard CIFAR schedule: the LDAM pipeline + RandomRotation(15), i.e.
    `make_train_transform(rotation=15)`.
  * BalPoE long schedule: crop 4 + flip + AutoAugment's CIFAR-10 policy, no rotation, i.e.
    `make_train_transform(autoaugment=True)`.

Normalisation constants: `CIFAR_MEAN` / `CIFAR_STD` are the values LDAM-DRW, RIDE and BalPoE use
for both CIFAR-10 and CIFAR-100 (the std is not the per-pixel std of the data set but the figure
those code bases carry, kept so results stay comparable). ImageNet-LT and Places-LT use the
ImageNet constants, iNaturalist 2018 its own (`augment_imagenet` has their transforms).
`normalize` is applied after batching or per example, outside the augmentation.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# iNaturalist 2018's own constants in RIDE/SADE/BalPoE (docs/shared.md).
INATURALIST_MEAN = (0.466, 0.471, 0.380)
INATURALIST_STD = (0.195, 0.194, 0.192)

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _check_image(image: np.ndarray, what: str,
                 channels: Sequence[int] | None = (1, 3)) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{what} expects one image [H, W, C]; got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} expects a uint8 image; got dtype {image.dtype}")
    if channels is not None and image.shape[-1] not in channels:
        raise ValueError(f"{what} expects C in {tuple(channels)}; got image shape {image.shape}")


def _to_pil(image: np.ndarray) -> Image.Image:
    # A 2-D uint8 array becomes mode 'L', [H, W, 3] becomes 'RGB'.
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(pil: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(pil, dtype=np.uint8)
    if channels == 1:
        out = out[..., None]
    return np.ascontiguousarray(out)


def random_crop(image: np.ndarray, rng: np.random.Generator, *, padding: int) -> np.ndarray:
    """Zero-pads `padding` pixels on every spatial side, then crops a random H x W window.

    Matches torchvision's RandomCrop(size=(H, W), padding=padding): the window's top-left corner
    is uniform over 0..2*padding (inclusive) on each axis.

    Args:
      image: uint8 [H, W, C].
      rng: source of the two offsets.
      padding: pixels of zeros added on each side; 0 returns the image unchanged.

    Returns:
      uint8 [H, W, C].
    """
    _check_image(image, "random_crop", channels=None)
    if padding < 0:
        raise ValueError(f"random_crop padding={padding}; expected padding >= 0")
    if padding == 0:
        return image
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    top, left = rng.integers(0, 2 * padding + 1, size=2)
    return padded[top:top + h, left:left + w]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirrors left-right with probability 0.5.

    Args:
      image: uint8 [H, W, C].
      rng: source of the coin flip.

    Returns:
      uint8 [H, W, C]: `image` or `image[:, ::-1]`.
    """
    _check_image(image, "random_flip", channels=None)
    if rng.random() < 0.5:
        # Contiguous copy: later PIL steps and grain batching want a plain array, not a view.
        return np.ascontiguousarray(image[:, ::-1])
    return image


def random_rotation(image: np.ndarray, rng: np.random.Generator, *,
                    max_degrees: float) -> np.ndarray:
    """Rotates about the image centre by an angle uniform in [-max_degrees, max_degrees].

    As torchvision's RandomRotation(max_degrees) defaults: same output size, nearest-neighbour
    sampling, zeros where the rotated image does not reach. Positive angles turn
    counter-clockwise (PIL's convention, which torchvision follows).

    Args:
      image: uint8 [H, W, C] with C = 1 or 3.
      rng: source of the angle.
      max_degrees: bound on |angle|; 0 returns the image unchanged.

    Returns:
      uint8 [H, W, C].
    """
    _check_image(image, "random_rotation")
    if max_degrees < 0:
        raise ValueError(f"random_rotation max_degrees={max_degrees}; expected >= 0")
    if max_degrees == 0:
        return image
    angle = float(rng.uniform(-max_degrees, max_degrees))
    rotated = _to_pil(image).rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=0)
    return _from_pil(rotated, image.shape[-1])


# ---------------------------------------------------------------------------------------------
# AutoAugment, CIFAR-10 policy (Cubuk et al., CVPR 2019).

# The policy searched on reduced CIFAR-10, as listed in the paper's appendix: 25 sub-policies,
# each two (operation, probability, magnitude level 0..9) steps.
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)

_NUM_LEVELS = 10
# Level i of an op maps to the i-th of 10 evenly spaced values over the op's range.
_LEVELS = {
    "ShearX": np.linspace(0.0, 0.3, _NUM_LEVELS),
    "ShearY": np.linspace(0.0, 0.3, _NUM_LEVELS),
    # Fraction of the image side; the paper's 150 px on 331 px ImageNet crops.
    "TranslateX": np.linspace(0.0, 150 / 331, _NUM_LEVELS),
    "TranslateY": np.linspace(0.0, 150 / 331, _NUM_LEVELS),
    "Rotate": np.linspace(0.0, 30.0, _NUM_LEVELS),
    "Color": np.linspace(0.0, 0.9, _NUM_LEVELS),
    "Contrast": np.linspace(0.0, 0.9, _NUM_LEVELS),
    "Sharpness": np.linspace(0.0, 0.9, _NUM_LEVELS),
    "Brightness": np.linspace(0.0, 0.9, _NUM_LEVELS),
    "Posterize": np.round(np.linspace(8, 4, _NUM_LEVELS)).astype(int),
    "Solarize": np.linspace(256.0, 0.0, _NUM_LEVELS),
    "AutoContrast": np.zeros(_NUM_LEVELS),
    "Equalize": np.zeros(_NUM_LEVELS),
    "Invert": np.zeros(_NUM_LEVELS),
}

# Mid-grey, so geometric ops do not introduce black borders that a network could key on.
_AFFINE_FILL = (128, 128, 128)


# Operations without a magnitude, shared with RandAugment (augment_imagenet).
NO_ARGUMENT_OPS = {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize,
                   "Invert": ImageOps.invert}


def _signed(magnitude: float, rng: np.random.Generator) -> float:
    return magnitude if rng.random() < 0.5 else -magnitude


def _apply_op(img: Image.Image, name: str, level: int, rng: np.random.Generator) -> Image.Image:
    """Applies one AutoAugment operation at magnitude `level` (0..9) to an RGB PIL image."""
    m = _LEVELS[name][level]
    w, h = img.size
    if name == "ShearX":
        s = _signed(m, rng)
        return img.transform(img.size, Image.Transform.AFFINE, (1, s, 0, 0, 1, 0),
                             resample=Image.Resampling.BICUBIC, fillcolor=_AFFINE_FILL)
    if name == "ShearY":
        s = _signed(m, rng)
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, s, 1, 0),
                             resample=Image.Resampling.BICUBIC, fillcolor=_AFFINE_FILL)
    if name == "TranslateX":
        t = _signed(m * w, rng)
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, t, 0, 1, 0),
                             fillcolor=_AFFINE_FILL)
    if name == "TranslateY":
        t = _signed(m * h, rng)
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, t),
                             fillcolor=_AFFINE_FILL)
    if name == "Rotate":
        return img.rotate(_signed(m, rng), fillcolor=_AFFINE_FILL)
    if name == "Color":
        return ImageEnhance.Color(img).enhance(1.0 + _signed(m, rng))
    if name == "Contrast":
        return ImageEnhance.Contrast(img).enhance(1.0 + _signed(m, rng))
    if name == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(1.0 + _signed(m, rng))
    if name == "Brightness":
        return ImageEnhance.Brightness(img).enhance(1.0 + _signed(m, rng))
    if name == "Posterize":
        return ImageOps.posterize(img, int(m))
    if name == "Solarize":
        return ImageOps.solarize(img, m)
    if name in NO_ARGUMENT_OPS:
        return NO_ARGUMENT_OPS[name](img)
    raise ValueError(f"unknown AutoAugment operation {name!r}")


def autoaugment_cifar(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """AutoAugment with the CIFAR-10 policy: one of 25 sub-policies, chosen uniformly.

    Each of the sub-policy's two operations is applied, in order, with its own probability;
    operations with a direction (shear, translate, rotate, the enhance factors) pick a random
    sign. The policy is defined on RGB images only.

    Args:
      image: uint8 [H, W, 3].
      rng: source of the sub-policy, the coin flips and the signs.

    Returns:
      uint8 [H, W, 3].
    """
    _check_image(image, "autoaugment_cifar", channels=(3,))
    sub_policy = CIFAR10_POLICY[int(rng.integers(len(CIFAR10_POLICY)))]
    img = _to_pil(image)
    for name, prob, level in sub_policy:
        if rng.random() < prob:
            img = _apply_op(img, name, level, rng)
    return _from_pil(img, 3)


# ---------------------------------------------------------------------------------------------


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Scales to [0, 1] and standardises per channel: (image / 255 - mean) / std.

    Args:
      image: uint8 [H, W, C] or [B, H, W, C].
      mean: C per-channel means (of [0, 1] pixel values).
      std: C per-channel standard deviations.

    Returns:
      float32, same shape as `image`.
    """
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"normalize expects [H, W, C] or [B, H, W, C]; got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"normalize expects uint8 pixels; got dtype {image.dtype}")
    channels = image.shape[-1]
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalize got len(mean)={len(mean)}, len(std)={len(std)} for an image "
                         f"with C={channels} channels (shape {image.shape}); they must match")
    return ((image.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def make_train_transform(*, crop_padding: int = 4, flip: bool = True, rotation: float = 0.0,
                         autoaugment: bool = False) -> Transform:
    """Builds the training augmentation `fn(image uint8 [H, W, C], rng) -> uint8 [H, W, C]`.

    Steps, in order, each only when enabled: random_crop(padding=crop_padding), random_flip,
    autoaugment_cifar, random_rotation(max_degrees=rotation). All defaults off except crop and
    flip gives LDAM-DRW's pipeline; see the module docstring for the others.

    Args:
      crop_padding: zero padding for the random crop; 0 turns cropping off.
      flip: whether to mirror left-right with probability 0.5.
      rotation: max |angle| in degrees; 0 turns rotation off.
      autoaugment: whether to apply AutoAugment's CIFAR-10 policy (needs C = 3).

    Returns:
      The transform. With everything off it returns its input unchanged.
    """
    if isinstance(crop_padding, bool) or int(crop_padding) != crop_padding or crop_padding < 0:
        raise ValueError(f"crop_padding={crop_padding!r}; expected an integer >= 0")
    if not rotation >= 0:  # also rejects NaN
        raise ValueError(f"rotation={rotation!r}; expected a number of degrees >= 0")
    crop_padding = int(crop_padding)
    rotation = float(rotation)
    flip = bool(flip)
    autoaugment = bool(autoaugment)

    def transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if crop_padding > 0:
            image = random_crop(image, rng, padding=crop_padding)
        if flip:
            image = random_flip(image, rng)
        if autoaugment:
            image = autoaugment_cifar(image, rng)
        if rotation > 0:
            image = random_rotation(image, rng, max_degrees=rotation)
        return image

    return transform
