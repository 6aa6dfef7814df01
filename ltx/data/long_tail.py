"""Long-tailed subsets of balanced datasets, exactly as the CIFAR-LT convention.

The convention comes from LDAM-DRW's `imbalance_cifar.py`, copied unchanged into RIDE, SADE and
BalPoE (BalPoE adds the reversed profile for backward test sets):

- class i of C keeps `int(max_per_class * (1 / imbalance_ratio) ** (i / (C - 1)))` images
  (exponential profile; truncation, not rounding), so class 0 is the head and class index order is
  frequency order;
- the step profile keeps `max_per_class` for the first C // 2 classes and
  `int(max_per_class / imbalance_ratio)` for the others;
- the images are chosen with NumPy's legacy global RNG: `np.random.seed(0)`, then for each class in
  sorted label order, shuffle that class's indices and keep the first n_i. One RNG stream runs
  through all classes, so the selection of class k depends on the sizes of classes < k.

We draw from a private `np.random.RandomState(seed)`, which is the same MT19937 stream as the
legacy global seed, without touching global state.

`checked_subset` guards the datasets' use of the convention against silent data loss (the
references never meet it: CIFAR's 500 or 5,000 images per class keep at least 5 at ratio 100):
a subset that leaves a class without images is refused, naming the class and the ratio that
would keep one, and a subset that keeps less than half of a training set that was long-tailed
already (its head then gets the smallest class's count) is warned about.
"""

from __future__ import annotations

import sys

import numpy as np

PROFILES = ("exp", "step", "balanced")


def long_tail_counts(
    max_per_class: int,
    num_classes: int,
    imbalance_ratio: float,
    profile: str = "exp",
    reverse: bool = False,
) -> np.ndarray:
    """Per-class image counts of a long-tailed subset.

    Args:
      max_per_class: images of the head class (500 for CIFAR-100, 5000 for CIFAR-10).
      num_classes: C.
      imbalance_ratio: n_max / n_min, e.g. 100 (the references pass `imb_factor = 1 / ratio`).
      profile: 'exp' (exponential), 'step' or 'balanced'.
      reverse: BalPoE's reversed exponential profile (class C-1 is the head), used to build the
        backward long-tailed test sets. Only meaningful for 'exp'.

    Returns:
      int64 [C] counts. CIFAR-100, ratio 100: 500, 477, 455, ..., 5 (10,847 in total).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}; expected one of {PROFILES}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}; expected at least 2")
    if max_per_class < 1:
        raise ValueError(f"max_per_class={max_per_class}; expected a positive integer")
    if not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio={imbalance_ratio}; expected a number >= 1")
    factor = 1.0 / imbalance_ratio
    if profile == "balanced":
        return np.full(num_classes, int(max_per_class), dtype=np.int64)
    if profile == "step":
        half = num_classes // 2
        counts = [int(max_per_class)] * half
        counts += [int(max_per_class * factor)] * (num_classes - half)
        return np.asarray(counts, dtype=np.int64)
    # The float expression is written as in the reference so truncation hits the same integers.
    counts = []
    for i in range(num_classes):
        exponent = (num_classes - 1 - i) if reverse else i
        counts.append(int(max_per_class * factor ** (exponent / (num_classes - 1.0))))
    return np.asarray(counts, dtype=np.int64)


def long_tail_indices(labels, counts, seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset, in the reference's order.

    Args:
      labels: int [N] labels of the full (balanced) dataset, values in [0, C).
      counts: int [C] images to keep per class (from `long_tail_counts`).
      seed: the reference's `rand_number` (0 for every published CIFAR-LT result).

    Returns:
      int64 [sum(counts)] indices into `labels`: class 0's kept indices (in shuffled order), then
      class 1's, and so on.
    """
    labels = np.asarray(labels)
    counts = np.asarray(counts)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-D [num_classes], got shape {counts.shape}")
    num_classes = counts.shape[0]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"label {bad} out of range; expected labels in [0, {num_classes}) "
                         f"to match len(counts)={num_classes}")
    rng = np.random.RandomState(seed)
    selected = []
    for cls in range(num_classes):
        (members,) = np.where(labels == cls)
        if counts[cls] > members.size:
            raise ValueError(f"class {cls} needs {int(counts[cls])} images but the dataset has "
                             f"only {members.size}")
        rng.shuffle(members)
        selected.append(members[: counts[cls]])
    return np.concatenate(selected).astype(np.int64)


RATIO_SETTING = "config.data.imbalance_ratio"


def checked_subset(available, counts, *, imbalance_ratio: float, profile: str = "exp",
                   class_names=None, source: str = "the training set") -> str | None:
    """Refuses a long-tailed subset that would leave a class empty; says when it drops most of
    an imbalanced training set.

    Args:
      available: int [C] images per class of the training set the subset is taken from.
      counts: int [C] images per class the subset keeps (`long_tail_counts`).
      imbalance_ratio, profile: the subset's settings (named in the messages).
      class_names: [C] names shown for the classes, or None for their indices.
      source: what the training set is, for the messages.

    Returns:
      None, or a warning line when the subset keeps less than half of the training set and
      its smallest class has less than half the mean class's images (the profile's head gets
      the smallest class's count, so such a set loses more than the ratio asks for: a set
      that is long-tailed already).

    Raises:
      ValueError: naming the class(es) that the subset (or the training set itself) leaves
        without an image, and the setting to change.
    """
    available = np.asarray(available, np.int64)
    counts = np.asarray(counts, np.int64)
    label = ((lambda c: f"{class_names[c]!r} ({c})") if class_names is not None and
             len(class_names) == len(counts) else (lambda c: str(c)))
    setting = f"{RATIO_SETTING}={imbalance_ratio:g}, profile {profile!r}"

    def named(classes) -> str:
        shown = ", ".join(label(int(c)) for c in classes[:5])
        more = f" and {len(classes) - 5} more" if len(classes) > 5 else ""
        return f"class{'es' if len(classes) > 1 else ''} {shown}{more}"

    missing = np.flatnonzero(available == 0)
    if missing.size:
        raise ValueError(
            f"{source} has no image of {named(missing)}, so its long-tailed subset ({setting}) "
            "would have none either; add training images of those classes")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"the long-tailed subset of {source} ({setting}) leaves {named(empty)} "
                         f"with no training image: {_why_empty(available, counts, profile)}")
    kept, total = int(counts.sum()), int(available.sum())
    # A balanced set of the same size loses only what the ratio asks for; this one loses more by
    # the factor mean / smallest class, since the profile starts from the smallest class.
    if 2 * kept < total and 2 * available.min() < available.mean():
        return (f"the long-tailed subset of {source} ({setting}) keeps {kept} of its {total} "
                f"images ({100 * kept / total:.0f}%): its head class gets the smallest class's "
                f"{int(available.min())} images (the CIFAR-LT convention, made for a balanced "
                f"set), while the classes have {available.mean():.1f} on average. If the "
                f"training set is long-tailed already, train on it as it is with ir=1 "
                f"({RATIO_SETTING}=1)")
    return None


def _why_empty(available: np.ndarray, counts: np.ndarray, profile: str) -> str:
    """Why a subset with `counts` [C] of a set with `available` [C] has an empty class, and
    what to change."""
    head = int(counts.max())
    imbalanced = head == available.min() < available.max()
    feasible = long_tail_counts(head, len(counts), head, profile).min() >= 1
    limit = f"at most {head}" if feasible else f"below {head}"
    why = (f"its head class keeps {head} images (the smallest class's count: the convention "
           f"is made for a balanced set), so every class keeps one only with a ratio {limit}"
           if imbalanced else
           f"its head class keeps {head} images, so every class keeps one only with a ratio "
           f"{limit}")
    return (f"{why}. Lower {RATIO_SETTING} (ir=)"
            + (", or, if the training set is long-tailed already, train on it as it is with "
               "ir=1" if imbalanced else ""))


def warn(message: str | None) -> None:
    """Prints `Warning: <message>` to stderr (nothing for None)."""
    if message:
        print(f"Warning: {message}", file=sys.stderr, flush=True)
