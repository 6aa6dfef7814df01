"""digits-LT: the embedded default dataset, built from scikit-learn's bundled 8x8 digits.

No download: the 1,797 images (10 classes, 174-183 per class) ship inside scikit-learn. The splits
are fixed given `split_seed`:

- test: `test_per_class` images of every class (balanced, default 30 -> 300 images);
- val: the next `val_per_class` of every class (balanced, default 10 -> 100 images);
- train: a long-tailed subset of the rest, from the CIFAR-LT exponential profile
  (`long_tail_counts`) and the reference's seed-0 selection (`long_tail_indices`).

The default head size is the largest every class can supply after the held-out splits
(174 - 30 - 10 = 134), and the default imbalance ratio 10 gives the per-class training counts
134, 103, 80, 62, 48, 37, 28, 22, 17, 13 (544 images): 2 many-shot (> 100), 6 medium-shot and 2
few-shot (< 20) classes under the default shot convention.

Pixels are 0..16 in scikit-learn; they are rescaled to uint8 0..255 so the same augmentation code
serves digits and CIFAR. Images are [8, 8, 1].
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from ltx.data import long_tail, splits

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)


# scikit-learn's file of the digits (64 pixels 0..16 and the label per row), which
# `sklearn.datasets.load_digits` reads.
_CSV = ("datasets", "data", "digits.csv.gz")


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8, 1] in 0..255, labels int64 [1797]). Reads scikit-learn's
    bundled file directly where it lies: importing `sklearn.datasets` takes about 1.1 s of the
    default job's launch, reading the file 0.05 s; the same arrays as `load_digits()`."""
    spec = importlib.util.find_spec("sklearn")
    path = (os.path.join(os.path.dirname(spec.origin), *_CSV)
            if spec is not None and spec.origin else "")
    if os.path.isfile(path):
        data = np.loadtxt(path, delimiter=",")
        pixels, labels = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:  # Another layout of scikit-learn: its loader.
        from sklearn.datasets import load_digits
        bunch = load_digits()
        pixels, labels = bunch.images, bunch.target
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, labels.astype(np.int64)


def _held_out(labels: np.ndarray, test_per_class: int, val_per_class: int, seed: int):
    """([test indices], [val indices], [training pool indices]), one array per class: each
    class's images in a random order (`seed`), the first ones held out."""
    rng = np.random.RandomState(seed)
    test_idx, val_idx, pool_idx = [], [], []
    for cls in range(NUM_CLASSES):
        members = rng.permutation(np.where(labels == cls)[0])
        test_idx.append(members[:test_per_class])
        val_idx.append(members[test_per_class:test_per_class + val_per_class])
        pool_idx.append(members[test_per_class + val_per_class:])
    return test_idx, val_idx, pool_idx


def digits_lt(
    imbalance_ratio: float = 10.0,
    *,
    profile: str = "exp",
    max_per_class: int | None = None,
    test_per_class: int = 30,
    val_per_class: int = 10,
    split_seed: int = 0,
    subset_seed: int = 0,
) -> splits.Dataset:
    """Builds digits-LT.

    Args:
      imbalance_ratio: n_max / n_min of the training split.
      profile: 'exp', 'step' or 'balanced' (as `long_tail_counts`).
      max_per_class: head class size; None uses the largest possible (134 with the defaults).
      test_per_class, val_per_class: balanced held-out images per class.
      split_seed: seed of the held-out split permutation.
      subset_seed: seed of the long-tailed selection (the reference's `rand_number`).
    """
    images, labels = _load_digits()
    test_idx, val_idx, pool_idx = _held_out(labels, test_per_class, val_per_class, split_seed)
    pool = np.concatenate(pool_idx)
    smallest_pool = min(len(p) for p in pool_idx)
    if max_per_class is None:
        max_per_class = smallest_pool
    if max_per_class > smallest_pool:
        raise ValueError(f"max_per_class={max_per_class} exceeds the {smallest_pool} images the "
                         "smallest class has left after the test and val splits")
    counts = long_tail.long_tail_counts(max_per_class, NUM_CLASSES, imbalance_ratio, profile)
    long_tail.warn(long_tail.checked_subset(
        np.bincount(labels[pool], minlength=NUM_CLASSES), counts,
        imbalance_ratio=imbalance_ratio, profile=profile,
        source="the digits training pool (the images left after the test and val splits)"))
    train_idx = pool[long_tail.long_tail_indices(labels[pool], counts, seed=subset_seed)]

    source = splits.ArraySource(images, labels)
    scaled = images.astype(np.float64) / 255.0

    def split(idx):
        idx = np.asarray(idx, dtype=np.int64)
        return splits.Split(source=source, indices=idx, labels=labels[idx])

    return splits.Dataset(
        name="digits_lt",
        num_classes=NUM_CLASSES,
        image_shape=IMAGE_SHAPE,
        # Statistics of all 1,797 images: a fixed property of the data, not of a split.
        mean=(float(scaled.mean()),),
        std=(float(scaled.std()),),
        train=split(train_idx),
        val=split(np.concatenate(val_idx)) if val_per_class else None,
        test=split(np.concatenate(test_idx)),
        class_counts=counts,
    )
