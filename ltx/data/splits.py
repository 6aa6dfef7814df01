"""What a dataset hands the trainer: random-access record sources and index arrays.

A split is a random-access source of records `{'image': uint8 [H, W, C], 'label': int}` plus the
indices into it that belong to the split. A long-tailed training set is therefore just an index
array over the balanced source, which is how grain reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np


class ArraySource(Sequence):
    """A random-access source over in-memory arrays (images uint8 [N, H, W, C], labels int [N])."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} "
                             f"{images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} "
                             "images")
        self._images = images
        self._labels = labels.astype(np.int64)

    def __len__(self) -> int:
        return self._images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self._images[index], "label": self._labels[index]}

    def __repr__(self) -> str:
        return f"ArraySource(num_records={len(self)}, image_shape={self._images.shape[1:]})"


@dataclasses.dataclass(frozen=True)
class Split:
    """Records of one split.

    Attributes:
      source: random-access records `{'image': uint8 [H, W, C], 'label': int}`.
      indices: int [N] positions in `source` that form the split, in reading order.
      labels: int [N] labels of those records (so counts need no pass over the images).
    """

    source: Sequence
    indices: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.indices.shape != self.labels.shape:
            raise ValueError(f"indices {self.indices.shape} and labels {self.labels.shape} "
                             "must have the same shape")

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A long-tailed dataset: train/val/test splits, training counts and normalisation.

    Attributes:
      name: registry name, e.g. 'digits_lt' or 'cifar100_lt'.
      num_classes: C. Class ids are ordered by training frequency (0 is the head) for the
        CIFAR-LT family and digits-LT.
      image_shape: (H, W, C) of the model input.
      mean, std: per-channel normalisation on the [0, 1] scale.
      train, test: splits; `val` is None where the reference has no held-out validation set.
        All three are None for a dataset described without its images
        (`ltx.data.datasets.without_images`).
      class_counts: int [C] training images per class; shot groups and logit adjustment use it.
      eval_transform: deterministic `fn(uint8 [h, w, C]) -> uint8 image_shape` applied to every
        val/test record before normalisation, for sources whose images vary in size (resize +
        centre crop for the ImageNet-scale sets); None where records already have image_shape.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split | None
    test: Split | None
    val: Split | None
    class_counts: np.ndarray
    eval_transform: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def train_prior(self) -> np.ndarray:
        """float [C] training class frequencies n_c / N."""
        return self.class_counts / self.class_counts.sum()


def counts_from_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C] number of occurrences of each class in `labels` (host-side)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"label {bad} out of range [0, {num_classes})")
    return np.bincount(labels, minlength=num_classes).astype(np.int64)
