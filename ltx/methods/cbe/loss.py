"""Class-balanced experts (Sharma et al., GCPR 2020): reject class and outlier exposure.

Each expert classifies only its own class subset (many: n >= 100, medium: 20 <= n < 100, few:
n < 20 in the official code) and has to cope with images of the other classes. Two ways:

- Reject class (the official code, `saurabhsharma1993/class-balanced-experts`): the expert gets
  K + 1 outputs, its K classes in ascending class-id order and one reject ("open") class last.
  `reject_class_labels` maps global labels to that layout; `reject_undersample` draws the
  training set (all the expert's images plus an undersampled set of other images, as
  `dataloader.py: Threshold_Dataset`); training is plain CE on the K + 1 logits (the official
  head outputs log_softmax and trains with NLL, the same thing). Before the experts are combined,
  `reject_logit_correction` undoes the undersampling prior on the reject logit
  (`jointCalibration.py`).
- Outlier exposure (Hendrycks et al., ICLR 2019), the alternative the paper compares against: the
  expert has K outputs, CE on its own classes and a push towards the uniform distribution on
  others. `outlier_exposure_loss`. This is not in the official repository; it follows the OE
  objective of Hendrycks et al. with their weight 0.5.

Layout: an expert's logits are local, [B, K] or [B, K + 1], with K = in_expert_mask.sum() and the
columns in ascending global class id; labels stay global in [0, C). With ltx's fixed-width
(vmapped) heads, take the expert's columns first, e.g. `logits[..., np.flatnonzero(mask)]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.losses import input_checks as checks


def _expert_mask(in_expert_mask, fn: str) -> np.ndarray:
    shape = np.shape(in_expert_mask)
    if len(shape) != 1:
        raise ValueError(f"{fn}: in_expert_mask must be 1-D [C] over all classes, got shape "
                         f"{shape}")
    mask = checks.check_class_mask(in_expert_mask, fn, "in_expert_mask", shape, "[C]")
    if not mask.any():
        raise ValueError(f"{fn}: in_expert_mask selects no class; an expert needs at least one "
                         "class")
    return mask


def _local_labels(labels: jax.Array, mask: np.ndarray) -> jax.Array:
    """Rank of y among the mask's classes, or K = mask.sum() outside; one-hot product."""
    table = np.where(mask, np.cumsum(mask) - 1, mask.sum()).astype(np.int32)  # [C]
    targets = jax.nn.one_hot(labels, mask.size, dtype=jnp.int32)
    return jnp.sum(targets * table, axis=-1)


def reject_class_labels(labels: jax.Array, in_expert_mask) -> jax.Array:
    """Global labels -> an expert's local labels with a reject class, int32 [B].

    Args:
      labels: int [B] global class ids in [0, C).
      in_expert_mask: static bool [C], the expert's K classes.

    Returns:
      The rank of y among the expert's classes (in ascending class id) if y is one of them, else
      K, the reject class (the official code labels open samples 1001 and re-indexes the sorted
      unique labels, so the reject class comes last). Computed with a one-hot product, so it is
      valid on batch-sharded labels. Unlike the official re-indexing, which ranks the labels
      present in the data split, the ranks come from the mask, so they do not shift when a class
      has no images in a split.
    """
    fn = "reject_class_labels"
    mask = _expert_mask(in_expert_mask, fn)
    return _local_labels(checks.check_labels(labels, fn, None, mask.size), mask)


def reject_undersample(labels, in_expert_mask, *, open_ratio: int = 16, seed=0) -> np.ndarray:
    """Indices of an expert's training set: all its images plus undersampled reject images.

    As `Threshold_Dataset` (drawn once, not per epoch): with n_in the number of images of the
    expert's classes, a random subset of floor(n_in / open_ratio) images of all other classes is
    kept (open_ratio 16 on ImageNet-LT and for Places' many-shot expert, 8 for Places'
    medium/few; 1 for validation). open_ratio = -1 is the official "1:n" option: floor(n_in / K')
    reject images, as many as an average class of the expert, K' the expert classes present.

    Args:
      labels: int [N] global labels of the whole training set.
      in_expert_mask: bool [C], the expert's classes.
      open_ratio: positive int, or -1.
      seed: int or `np.random.Generator` for the draw. The official code draws with NumPy's
        global generator after seed 5021, so its exact subset cannot be reproduced.

    Returns:
      int64 indices into labels: the expert's images in dataset order, then the drawn reject
      images (at most all of them).
    """
    fn = "reject_undersample"
    mask = _expert_mask(in_expert_mask, fn)
    labels = np.asarray(labels)
    checks.check_labels(labels, fn, None, mask.size)
    if isinstance(open_ratio, bool) or not isinstance(open_ratio, (int, np.integer)) or not (
            open_ratio >= 1 or open_ratio == -1):
        raise ValueError(f"{fn}: open_ratio={open_ratio!r}; expected a positive int, or -1 for "
                         "as many reject images as an average expert class")
    inside = mask[labels]
    closed = np.flatnonzero(inside)
    others = np.flatnonzero(~inside)
    if open_ratio == -1:
        num_open = closed.size // max(np.unique(labels[closed]).size, 1)
    else:
        num_open = closed.size // int(open_ratio)
    draw = np.random.default_rng(seed).permutation(others.size)[:num_open]
    return np.concatenate([closed, others[draw]]).astype(np.int64)


def reject_logit_correction(logits: jax.Array, *, open_ratio: float) -> jax.Array:
    """Adds log((1 + r) / 2) to the reject logit (the last column), r = open_ratio.

    Training with reject images undersampled 1 : r gives the reject class the prior 1 / (1 + r);
    the balanced validation split used for calibration (open_ratio 1) has prior 1 / 2. Adding the
    log prior ratio log((1 + r) / 2) to the reject logit moves it to that prior
    (`jointCalibration.py` writes it as subtracting log(2 / (1 + r)), with r = 16, or 8 for the
    Places medium/few experts). As in the official code the closed-class logits are left as they
    are (a full prior shift would also add log((1 + r) / (2 r)) to them, a constant that only
    changes the reject-vs-closed balance further).

    Args:
      logits: float [..., K + 1], reject logit last.
      open_ratio: r > 0, the training undersampling ratio.

    Returns:
      The logits (at least float32) with the last column raised by log((1 + r) / 2).
    """
    fn = "reject_logit_correction"
    logits = checks.check_logits(logits, fn, range(1, 8), "[..., K + 1]")
    if logits.shape[-1] < 2:
        raise ValueError(f"{fn}: logits have {logits.shape[-1]} column(s); expected the expert's "
                         "K >= 1 classes plus the reject class last")
    checks.check_positive(open_ratio, "open_ratio", fn)
    z = logits.astype(checks.compute_dtype(logits))
    return z.at[..., -1].add(jnp.log((1.0 + jnp.asarray(open_ratio, z.dtype)) / 2.0))


def outlier_exposure_loss(logits: jax.Array, labels: jax.Array, *, in_expert_mask,
                          weight: float = 0.5, where=None) -> jax.Array:
    """Outlier-exposure loss of an expert over a class subset.

    Args:
      logits: float [B, K], the expert's logits over its K classes (ascending class id).
      labels: int [B] global labels in [0, C).
      in_expert_mask: static bool [C], the expert's classes; K = its number of True entries.
      weight: the OE weight lambda (0.5 in Hendrycks et al.).
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar (float32 or wider)
        mean_{i in S_in} CE(z_i, local(y_i))
          + weight * mean_{i in S_out} (logsumexp(z_i) - mean_c z_ic),
      where S_in are the samples of the expert's classes, local(y) their rank among the K
      classes and the second term is the cross-entropy from the uniform distribution over the K
      classes to softmax(z). An empty S_in or S_out contributes 0 (masks, jit-safe).
    """
    fn = "outlier_exposure_loss"
    logits = checks.check_logits(logits, fn, (2,), "[B, K]")
    mask = _expert_mask(in_expert_mask, fn)
    batch, width = logits.shape
    num_inside = int(mask.sum())
    if width != num_inside:
        raise ValueError(f"{fn}: logits have {width} columns but in_expert_mask selects "
                         f"{num_inside} classes; expected the expert's logits over exactly its K "
                         "classes")
    labels = checks.check_labels(labels, fn, batch, mask.size)
    where = checks.check_where(where, fn, batch)
    local = _local_labels(labels, mask)  # K for samples outside the expert.
    z = logits.astype(checks.compute_dtype(logits))
    log_probs = jax.nn.log_softmax(z, axis=-1)
    targets = jax.nn.one_hot(local, num_inside, dtype=z.dtype)  # All-zero rows for outsiders.
    inside = jnp.sum(targets, axis=-1)  # [B], 1 inside the expert, 0 outside.
    outside = 1.0 - inside
    if where is not None:  # Padding rows are neither inside nor outside.
        real = where.astype(z.dtype)
        inside, outside = inside * real, outside * real
    nll = -jnp.sum(targets * log_probs, axis=-1)
    uniform_ce = -jnp.mean(log_probs, axis=-1)
    ce_in = jnp.sum(inside * nll) / jnp.maximum(jnp.sum(inside), 1.0)
    oe = jnp.sum(outside * uniform_ce) / jnp.maximum(jnp.sum(outside), 1.0)
    return ce_in + weight * oe
