"""LDAM-DRW's losses: focal loss, label-distribution-aware margins and deferred re-weighting.

Follows `kaidic/LDAM-DRW` (`losses.py` for the focal and LDAM losses, `cifar_train.py` for the
DRW class weights). Logits follow ltx's convention for cosine heads: the model outputs
`scale * cos`, so the LDAM margin is subtracted as `scale * m_y` (RIDE's form), which equals the
LDAM-DRW code's `scale * (cos - m_y)`.

Class statistics (`class_counts`) are static training counts. When they are concrete, the
per-class vectors are computed in float64 NumPy, as the official code does, and only then cast;
traced counts are supported but not validated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.losses import input_checks as checks


# ---------------------------------------------------------------------------------------------
# Class statistics.


def margins_from_counts(counts, xp, max_margin):
    """`ldam_margins` of counts [C] with the array module `xp` (numpy or jax.numpy), no
    checks: max_margin * (n_min / n_c)^(1/4), [C]."""
    margins = 1.0 / xp.sqrt(xp.sqrt(counts))
    return margins * (max_margin / xp.max(margins))


def ldam_margins(class_counts, *, max_margin: float = 0.5) -> jax.Array:
    """LDAM's per-class margins, m_c = max_margin * (n_min / n_c)^(1/4).

    The code (`losses.py: LDAMLoss.__init__`) computes m_c proportional to n_c^(-1/4) and rescales
    so that the largest margin equals `max_margin`; the paper writes the constant as a tuned C.
    CIFAR-100-LT with imbalance ratio 100 gives 0.158 (head) to 0.5 (tail).

    Args:
      class_counts: [C] positive training counts per class.
      max_margin: the margin of the rarest class (LDAM-DRW's `max_m`), >= 0.

    Returns:
      float [C], in JAX's default float dtype (computed in float64 for concrete counts).
    """
    fn = "ldam_margins"
    counts = checks.check_counts(class_counts, fn, positive=True)
    xp = checks.array_module(counts)
    checks.check_positive(max_margin, "max_margin", fn, allow_zero=True)
    return jnp.asarray(margins_from_counts(counts, xp, max_margin))


def effective_number_weights(counts, xp, beta):
    """`drw_class_weights` of counts [C] with the array module `xp`, no checks: (1 - beta) /
    (1 - beta^n_c), normalised to sum to C, [C]."""
    weights = (1.0 - beta) / (1.0 - xp.power(beta, counts))
    return weights / xp.sum(weights) * counts.shape[0]


def drw_class_weights(class_counts, *, beta: float = 0.9999) -> jax.Array:
    """Class-balanced weights (Cui et al. 2019) as used by deferred re-weighting (DRW).

      w_c = (1 - beta) / (1 - beta^(n_c)),  normalised so that sum_c w_c = C.

    `cifar_train.py` switches beta from 0 to 0.9999 at epoch 160 (0-indexed `epoch // 160`);
    beta = 0 gives all-ones weights, i.e. plain (unweighted) training. CIFAR-100-LT with imbalance
    ratio 100 and beta = 0.9999 gives 0.0449 (head) to 4.378 (tail).

    Args:
      class_counts: [C] positive training counts per class.
      beta: in [0, 1).

    Returns:
      float [C], in JAX's default float dtype (computed in float64 for concrete counts).
    """
    fn = "drw_class_weights"
    counts = checks.check_counts(class_counts, fn, positive=True)
    xp = checks.array_module(counts)
    checks.check_fraction(beta, "beta", fn)
    return jnp.asarray(effective_number_weights(counts, xp, beta))


# ---------------------------------------------------------------------------------------------
# Losses.


def drw_schedule(class_counts, drw_epoch: int, beta: float = 0.9999):
    """Deferred re-weighting: `weights(epoch) -> float32 [C]`, all ones before `drw_epoch` (the
    0-indexed epoch of the switch; LDAM-DRW's `idx = epoch // 160`), the class-balanced weights
    (`drw_class_weights`) from it on. Valid on a traced epoch, so one compiled step serves both
    phases. Used by LDAM-DRW, focal loss and ALA + MoE.
    """
    if drw_epoch < 0:
        raise ValueError(f"method.drw_epoch={drw_epoch}; expected >= 0 (a large value turns DRW "
                         "off)")
    balanced = jnp.asarray(drw_class_weights(np.asarray(class_counts), beta=beta), jnp.float32)
    ones = jnp.ones_like(balanced)
    # With all-ones weights PyTorch's weighted mean is the plain mean.
    return lambda epoch: jnp.where(epoch >= drw_epoch, balanced, ones)


def subtract_target_margin(logits, onehot, margins, scale):
    """Subtracts scale * m_y from the target logit only: z - scale * m_y * e_y (logits and
    onehot [..., B, C], margins [C]) -> [..., B, C]."""
    batch_margin = onehot @ margins  # [B]
    return logits - (scale * batch_margin)[:, None] * onehot


def per_example_nll(logits, onehot):
    """-log softmax(logits)_y over the last axis; [..., B, C] -> [..., B]."""
    return -jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def focal_loss(logits: jax.Array, labels: jax.Array, *, gamma: float,
               class_weights=None, where=None) -> jax.Array:
    """Focal loss with LDAM-DRW's exact reduction (`losses.py: focal_loss`, `FocalLoss`).

      ce_i = w_{y_i} * (-log softmax(z_i)_{y_i})          (w = 1 without class_weights)
      p_i  = exp(-ce_i)
      L    = (1/B) sum_i (1 - p_i)^gamma * ce_i

    Code vs paper (Lin et al. 2017, FL = -alpha_t (1 - p_t)^gamma log p_t): with class weights
    the official code feeds the *weighted* per-sample CE into the focal term, so p_i is
    p_{y_i}^{w_{y_i}} rather than the model's probability, the weight enters the modulating
    factor as well, and the result is the plain mean over B (not divided by the sum of the
    weights, unlike the weighted CE). This reproduces that. Without weights and with gamma = 0 it
    is the mean cross-entropy. `1 - p` is computed as `-expm1(-ce)` (same value, no cancellation),
    and a sample with ce = 0 gets a zero gradient instead of NaN when 0 < gamma < 1.

    Args:
      logits: float [B, C].
      labels: int [B] in [0, C).
      gamma: focusing parameter >= 0 (LDAM-DRW's script uses 1).
      class_weights: optional float [C] (e.g. `drw_class_weights`).
      where: optional bool [B]; only these rows count, B is their number (a padded last batch).

    Returns:
      Scalar loss, float32 or wider.
    """
    fn = "focal_loss"
    logits = checks.check_logits(logits, fn, (2,), "[B, C]")
    batch, num_classes = logits.shape
    labels = checks.check_labels(labels, fn, batch, num_classes)
    checks.check_positive(gamma, "gamma", fn, allow_zero=True)
    dtype = checks.compute_dtype(logits)
    weights = checks.check_class_weights(class_weights, fn, num_classes, dtype)
    where = checks.check_where(where, fn, batch)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    ce = per_example_nll(logits.astype(dtype), onehot)  # [B]
    if weights is not None:
        ce = ce * (onehot @ weights)
    one_minus_p = -jnp.expm1(-ce)
    positive = one_minus_p > 0
    safe = jnp.where(positive, one_minus_p, 1.0)
    zero_base = jnp.where(jnp.asarray(gamma) == 0, 1.0, 0.0).astype(dtype)  # 0^gamma
    modulation = jnp.where(positive, jnp.power(safe, jnp.asarray(gamma, dtype)), zero_base)
    return checks.batch_mean(modulation * ce, where)


def ldam_loss(logits: jax.Array, labels: jax.Array, *, class_counts, max_margin: float = 0.5,
              scale: float = 30.0, class_weights=None, where=None) -> jax.Array:
    """Label-distribution-aware margin (LDAM) loss (Cao et al. 2019).

    With logits z = scale * cos (a cosine head), margins m = `ldam_margins(class_counts)`:

      z~_i = z_i - scale * m_{y_i} * e_{y_i}      (only the target logit gets the margin)
      L    = sum_i w_{y_i} * (-log softmax(z~_i)_{y_i}) / sum_i w_{y_i}

    which equals LDAM-DRW's `F.cross_entropy(s * (cos - m_y e_y), y, weight=w)`
    (`losses.py: LDAMLoss`, where the model outputs cosines and s multiplies inside the loss) and
    RIDE's `LDAMLoss.get_final_output` (where s is inside the model, as in ltx). Without
    `class_weights` it is the plain batch mean; with them, PyTorch's weighted mean (divided by the
    sum of the batch's target weights, not by B). DRW passes `drw_class_weights(class_counts)`
    from its switch epoch on. With max_margin = 0 this is cross-entropy on the given (already
    scaled) logits.

    Code vs paper: the paper's margin constant C is tuned per dataset; the code fixes the tail
    margin to `max_margin` (0.5) instead. The paper applies the margin to normalised logits before
    scaling, the same thing for a cosine head.

    Args:
      logits: float [B, C], the scaled cosine logits `scale * cos`.
      labels: int [B] in [0, C).
      class_counts: [C] positive training counts per class.
      max_margin: margin of the rarest class, >= 0.
      scale: the cosine scale s > 0 that the logits already include (30 in LDAM-DRW and RIDE).
      class_weights: optional float [C].
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar loss, float32 or wider.
    """
    fn = "ldam_loss"
    logits = checks.check_logits(logits, fn, (2,), "[B, C]")
    batch, num_classes = logits.shape
    labels = checks.check_labels(labels, fn, batch, num_classes)
    counts = checks.check_counts(class_counts, fn, num_classes, positive=True)
    xp = checks.array_module(counts)
    checks.check_positive(max_margin, "max_margin", fn, allow_zero=True)
    checks.check_positive(scale, "scale", fn)
    dtype = checks.compute_dtype(logits)
    weights = checks.check_class_weights(class_weights, fn, num_classes, dtype)
    where = checks.check_where(where, fn, batch)
    margins = jnp.asarray(margins_from_counts(counts, xp, max_margin), dtype)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    shifted = subtract_target_margin(logits.astype(dtype), onehot, margins, scale)
    target_weights = None if weights is None else onehot @ weights
    return checks.weighted_mean(per_example_nll(shifted, onehot), target_weights, where)
