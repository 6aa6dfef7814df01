"""Class probabilities of a trained run for your own images.

    ltx-predict --workdir=runs/digits_lt_balpoe path/to/image.png path/to/folder --top_k=5
    ltx-predict --workdir=... folder --prior=0.3,0.2,0.1,0.1,0.1,0.05,0.05,0.04,0.03,0.03

From Python:

    predictor = Predictor.from_workdir("runs/digits_lt_balpoe")
    probs = predictor.predict_proba(images)               # uint8 [N, H, W, C] -> float [N, C]
    probs = predictor.predict_proba(images, target_prior=prior)   # for a known test prior
    predictor.class_names                                 # ['ant', 'bee', ...] or None

Images are uint8 pixels 0..255, [H, W], [H, W, C] or a batch; they are converted to the dataset's
channel count (grayscale <-> RGB, alpha dropped), brought to its input size like the evaluation
path (the dataset's `eval_transform` where it has one, else a bilinear resize: 8x8 for digits-LT)
and normalised with its mean and std. digits-LT images are light strokes on a dark
background (scikit-learn's convention): invert a dark-on-light scan first.

The prediction is the method's final predictor (`ltx.workdirs.final_predictor`): the ensemble's
aggregation of the expert logits (BalPoE: their mean, the balanced posterior when
mean(lambda) = 0), RIDE's router cascade, ALA + MoE's distilled model, the fused class-balanced
experts. A target prior goes through the method's test-prior correction (BalPoE: add its log);
a method without one refuses a prior.

Classes are shown by name where the dataset names them (`ltx.data.datasets.class_names`: the
`classes.txt` of a custom dataset, the names in the CIFAR tarball, a TFDS dataset's label
names, the digits), else by index.
"""

from __future__ import annotations

import io
from typing import Sequence

import jax
import numpy as np

from ltx import files, workdirs
from ltx.data import augment, datasets
from ltx.data.image_lists import IMAGE_EXTENSIONS
PRIOR_TOLERANCE = 1e-3


class ImageReadError(ValueError):
    """An image file could not be read or decoded."""


def check_prior(prior, num_classes: int) -> np.ndarray:
    """`prior` as float64 [C], or ValueError naming the values when it is not a distribution."""
    values = np.asarray(prior, np.float64)
    shown = np.array2string(values, precision=4, separator=", ", threshold=20)
    if values.ndim != 1 or values.shape[0] != num_classes:
        raise ValueError(f"target prior {shown} has {values.size} values in shape "
                         f"{values.shape}; expected one per class, {num_classes} in all")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"target prior {shown} has negative or non-finite values")
    if abs(values.sum() - 1.0) > PRIOR_TOLERANCE:
        raise ValueError(f"target prior {shown} sums to {values.sum():.6g}; expected 1 "
                         f"(within {PRIOR_TOLERANCE:g})")
    return values


def image_files(path: str) -> list[str]:
    """`path` itself if it is a file, else the image files directly in the folder, sorted."""
    if files.isfile(path):
        return [path]
    if not files.isdir(path):
        raise FileNotFoundError(f"{path!r} is neither an image file nor a folder")
    images = sorted(files.join(path, name) for name in files.listdir(path)
                    if name.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise FileNotFoundError(f"folder {path!r} holds no image files "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
    return images


def read_image(path: str) -> np.ndarray:
    """uint8 [H, W, C] pixels of an image file; ImageReadError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        # A local file goes to PIL by its name (which its errors then show), a URL's bytes
        # through the path layer.
        source = (files.expand(path) if files.is_local(path)
                  else io.BytesIO(files.read_bytes(path)))
        with Image.open(source) as image:
            image.load()
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            pixels = np.asarray(image, np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageReadError(f"cannot read image {path!r}: {err}") from err
    return pixels[..., None] if pixels.ndim == 2 else pixels


def fit_image(image: np.ndarray, image_shape: Sequence[int], eval_transform=None) -> np.ndarray:
    """One uint8 image converted to `image_shape` (H, W, C): channels, then size.

    The size comes from the dataset's `eval_transform` where it has one (resize + centre crop
    for the ImageNet-scale sets), else from a bilinear resize to (H, W).
    """
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8 pixels 0..255, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"an image must be [H, W] or [H, W, C] with C in (1, 3, 4), got shape "
                         f"{image.shape}")
    height, width, channels = image_shape
    if image.shape[-1] == 4:
        image = image[..., :3]
    if channels == 1 and image.shape[-1] == 3:
        image = np.asarray(Image.fromarray(image, "RGB").convert("L"))[..., None]
    elif channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if eval_transform is not None:
        return np.asarray(eval_transform(image), np.uint8)
    if image.shape[:2] != (height, width):
        pil = Image.fromarray(image[..., 0] if channels == 1 else image)
        image = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
        image = image[..., None] if image.ndim == 2 else image
    return image


class Predictor:
    """A finished workdir's final predictor that maps images to class probabilities."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.dataset = predictor.dataset
        self.num_classes = self.dataset.num_classes
        self.image_shape = tuple(self.dataset.image_shape)
        # The dataset's class names (`datasets.class_names`), None where it names none.
        names = datasets.class_names(predictor.config.data)
        self.class_names = names if names and len(names) == self.num_classes else None

    @classmethod
    def from_workdir(cls, workdir: str, *, step: int | None = None,
                     config=None) -> "Predictor":
        """Loads `workdir`'s latest (or `step`) checkpoint(s).

        `config` (default: the workdir's config.json) must describe the model that wrote the
        checkpoint; otherwise `ltx.checkpointing.CheckpointMismatchError` names the difference.
        The dataset is not read where the workdir records its training counts (`dataset.json`,
        written by training and `ltx-import`), so it need not be on this machine.
        """
        return cls(workdirs.final_predictor(workdir, step, config, images=False))

    def preprocess(self, images) -> np.ndarray:
        """float32 [N, H, W, C] model input from uint8 images (a batch array or a list)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        elif isinstance(images, np.ndarray):
            images = [images]
        transform = self.dataset.eval_transform
        fitted = np.stack([fit_image(image, self.image_shape, transform) for image in images])
        return augment.normalize(fitted, self.dataset.mean, self.dataset.std)

    def logits(self, images, target_prior=None, *, batch_size: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
        """(expert logits [E, N, C], ensemble logits [N, C]), the latter prior-corrected if given."""
        prior = None if target_prior is None else check_prior(target_prior, self.num_classes)
        inputs = self.preprocess(images)
        experts, ensemble = [], []
        for start in range(0, inputs.shape[0], batch_size):
            e, l = self.predictor.predict_images(inputs[start:start + batch_size])
            experts.append(np.asarray(e))
            ensemble.append(np.asarray(l))
        expert_logits, logits = np.concatenate(experts, 1), np.concatenate(ensemble)
        if prior is not None:
            logits = self.predictor.correct_prior(logits, prior)
        return expert_logits, logits

    def predict_proba(self, images, target_prior=None) -> np.ndarray:
        """float [N, C] class probabilities (softmax of the ensemble logits)."""
        return np.asarray(jax.nn.softmax(self.logits(images, target_prior)[1], axis=-1))

    def predict_paths(self, paths: Sequence[str], target_prior=None
                      ) -> tuple[list[str], np.ndarray]:
        """(image files, probabilities [N, C]) for image files and folders of images."""
        images = [f for path in paths for f in image_files(path)]
        return images, self.predict_proba([read_image(f) for f in images], target_prior)


def class_label(index: int, class_names: Sequence[str] | None) -> str:
    """How a class is shown: its name where the dataset names its classes, else its index."""
    return class_names[index] if class_names else str(index)


def top_k(probs: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row, the k most probable (class, probability) pairs, most probable first."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[(int(c), float(p[c])) for c in row] for row, p in zip(order, probs)]
