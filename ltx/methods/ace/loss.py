"""ACE: the distribution-aware planner and the experts' losses (Cai et al., ICCV 2021).

Follows `winterxx/ACE` (the authors' copy of the official code): the planner in `main/train.py`
and the loss in `lib/loss/loss.py: ResCELoss`.

Planner. Classes are sorted by descending count n_0 >= n_1 >= ... and r_j = sum_{i >= j} n_i / N
is the share of training images in classes j..C-1 (r_0 = 1, r_C = 0). Each threshold e splits at
j_e, the j with r_j > e >= r_{j+1}. Expert 0 ("many") targets all classes; expert k >= 1 targets
the tail classes [j_{e_k}, C) and its interfering classes are the head classes [0, j_{e_k}).
CIFAR-100-LT (ratio 100) with thresholds (0.3, 0.03) gives j = (25, 68).

Loss. For expert k with target classes TC_k and interfering classes IC_k = complement of TC_k, on
the samples S_k = {i : y_i in TC_k} of the batch:

    L_k = (1 / |S_k|) sum_{i in S_k} CE(z_k[i], y_i)  +  ||z_k[S_k][:, IC_k]||_F / |IC_k|

with a full C-way softmax in the CE and the Frobenius norm (not squared) of the whole submatrix of
raw logits, divided by the number of interfering classes (not by |S_k|, not a per-sample mean).
An empty S_k contributes 0, and so does the norm term of an expert without interfering classes
(expert 0). The total is L_0 + L_1 + ... (the official code backpropagates L_0 and then L_1 + L_2
into the same gradients).

Not in this function: in the official loop L_k for k >= 1 updates only expert k's own layers (the
shared backbone is frozen for that backward pass); in JAX feed `stop_gradient` of the shared
features to experts k >= 1 for these terms. With mixup the loss is evaluated for both label sets
and mixed, lambda * L(y_a) + (1 - lambda) * L(y_b), each with its own subsets.

Code vs paper: the paper writes the suppression term as a norm over interfering-class logits; the
code's exact normalisation (unsquared norm / |IC|) is only in the code. A downstream port
(zvalerie/Alps_LCC) uses an MSE instead, which is not ACE's default.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltx.losses import input_checks as checks


def ace_split(class_counts, thresholds: Sequence[float]) -> np.ndarray:
    """The planner's target-class masks, bool [1 + len(thresholds), C].

    Args:
      class_counts: [C] training images per class, sorted by descending count (ACE's classes are
        re-indexed by frequency; the split is a prefix/suffix of that order).
      thresholds: strictly decreasing shares e_k in [0, 1), e.g. (0.3, 0.03) for CIFAR-100-LT
        ratio 100, (0.4, 0.1) for ratio 50, ImageNet-LT and iNat, (0.3, 0.05) for CIFAR-10-LT.

    Returns:
      masks[0] is all True; masks[k] is True on classes [j_{e_k}, C), where j_e is the j with
      r_j > e >= r_{j+1} and r_j = sum_{i >= j} n_i / N.
    """
    fn = "ace_split"
    checks.require_concrete(class_counts, "class_counts", fn)
    counts = checks.check_counts(class_counts, fn, positive=False)
    if np.any(np.diff(counts) > 0):
        i = int(np.flatnonzero(np.diff(counts) > 0)[0])
        raise ValueError(f"class_counts[{i}] = {counts[i]:g} < class_counts[{i + 1}] = "
                         f"{counts[i + 1]:g}; ACE's planner expects classes sorted by descending "
                         "count")
    thresholds = [float(e) for e in np.atleast_1d(np.asarray(thresholds, np.float64))]
    for e in thresholds:
        if not 0.0 <= e < 1.0:
            raise ValueError(f"threshold {e} out of range; expected shares of the training set in "
                             "[0, 1)")
    if any(a <= b for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(f"thresholds {thresholds} must be strictly decreasing (many -> few)")
    num_classes = counts.size
    # residual[j] = share of images in classes j..C-1, for j = 0..C-1 (residual[0] = 1).
    residual = np.cumsum(counts[::-1])[::-1] / counts.sum()
    masks = [np.ones(num_classes, bool)]
    for e in thresholds:
        split = int(np.flatnonzero(residual > e)[-1])  # The last j with r_j > e.
        masks.append(np.arange(num_classes) >= split)
    return np.stack(masks)


def ace_expert_losses(expert_logits: jax.Array, labels: jax.Array, *,
                      target_masks, where=None) -> jax.Array:
    """ACE's per-expert losses L_k, float [E] (float32 or wider); `ace_loss` is their sum.

    Args, shapes and formula: see `ace_loss`.
    """
    fn = "ace_expert_losses"
    expert_logits = checks.check_logits(expert_logits, fn, (3,), "[E, B, C]", "expert_logits")
    num_experts, batch, num_classes = expert_logits.shape
    masks = checks.check_class_mask(target_masks, fn, "target_masks", (num_experts, num_classes),
                                    "[E, C] (experts, classes of expert_logits)")
    empty = ~masks.any(axis=1)
    if empty.any():
        raise ValueError(f"{fn}: target_masks[{int(np.flatnonzero(empty)[0])}] selects no class; "
                         "every expert needs at least one target class")
    labels = checks.check_labels(labels, fn, batch, num_classes)
    where = checks.check_where(where, fn, batch)

    z = expert_logits.astype(checks.compute_dtype(expert_logits))  # [E, B, C]
    targets = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)  # [B, C]
    target_classes = jnp.asarray(masks, z.dtype)  # [E, C]
    interfering = 1.0 - target_classes  # [E, C]
    num_interfering = np.sum(~masks, axis=1)  # [E], static

    # selected[k, i] = 1 if y_i is a target class of expert k (one-hot product, shard-safe).
    selected = jnp.transpose(targets @ target_classes.T)  # [E, B]
    if where is not None:  # Padding rows belong to no expert's subset.
        selected = selected * where.astype(z.dtype)
    num_selected = jnp.sum(selected, axis=1)  # [E]
    nll = -jnp.sum(targets * jax.nn.log_softmax(z, axis=-1), axis=-1)  # [E, B]
    ce = jnp.sum(selected * nll, axis=1) / jnp.maximum(num_selected, 1.0)  # 0 if S_k is empty.
    # Elementwise products and sums, not a dot over the (possibly sharded) batch axis.
    squares = jnp.sum(selected[:, :, None] * interfering[:, None, :] * jnp.square(z), axis=(1, 2))
    complement = checks.safe_sqrt(squares) / np.maximum(num_interfering, 1)
    return ce + jnp.where(num_interfering > 0, complement, 0.0)


def ace_loss(expert_logits: jax.Array, labels: jax.Array, *, target_masks,
             where=None) -> jax.Array:
    """ACE's loss: sum over experts of subset CE plus the interfering-logit suppression term.

    Args:
      expert_logits: float [E, B, C], expert k's logits over all C classes (LWS heads in ACE).
      labels: int [B] in [0, C).
      target_masks: static bool [E, C], expert k's target classes (`ace_split` builds them);
        every row needs at least one True.
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar sum_k L_k (float32 or wider) with
        L_k = mean_{i in S_k} CE(z_k[i], y_i) + ||z_k[S_k][:, IC_k]||_F / |IC_k|,
      S_k the samples whose label is a target class of expert k and IC_k the other classes. The
      CE is over all C classes; the norm is unsquared over the whole submatrix. An empty S_k or
      IC_k contributes 0 (computed with masks, so it is jit-safe; the norm's gradient at 0 is 0).
    """
    return jnp.sum(ace_expert_losses(expert_logits, labels, target_masks=target_masks,
                                     where=where))
