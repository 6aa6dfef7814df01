"""Adaptive logit adjustment (ALA; Zhao et al., arXiv 2104.06094, AAAI 2022).

ALA subtracts an instance- and class-dependent margin from the true-class logit of a cosine
classifier. With z = s * cos theta the scaled logits of a NormedLinear head and n_c the training
counts:

    DF_i = (1 - cos theta_{i, y_i}) / 2             difficulty, in [0, 1]; 0 for a perfect sample
    QF_c = log 2 / log(n_c / n_min + 1)             quantity: 1 for the rarest class, -> 0 for heads
    z'_{i, y_i} = z_{i, y_i} - s * DF_i * QF_{y_i}  (other logits unchanged)
    L = CE(z', y)  (optionally with DRW class weights, PyTorch weighted mean)

DF and QF are constants for the gradient (computed from stop_gradient(z)), so dL/dz is the CE
gradient at z' exactly as if the margin were a fixed number.

Source: there is no official repository. This follows the `ALALoss` class found in third-party
RIDE-style `loss.py` files: cos = detached logit / s, the log 2 normalisation of QF (a commented
alternative there uses 1 / log(n_c / n_min + 1)), s = 30, DRW weights (beta = 0.9999) after the
reweighting epoch. The paper's exact QF constant could not be verified. No clipping of cos to
[-1, 1] is applied, so the logits must really be s times cosines.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ltx.losses import input_checks as checks
from ltx.losses.classification import cross_entropy_unchecked


def ala_quantity_factors(class_counts) -> jax.Array:
    """ALA's class quantity factors, float32 [C]: log 2 / log(n_c / n_min + 1).

    n_min is the smallest count over all classes, so the rarest class gets exactly 1. Every count
    must be > 0 (a zero count would make every factor infinite).
    """
    counts = checks.check_counts(class_counts, "ala_quantity_factors", positive=True)
    return _quantity_factors(counts, jnp.float32)


def _quantity_factors(counts, dtype) -> jax.Array:
    """`ala_quantity_factors` of checked counts, in dtype."""
    counts = jnp.asarray(counts, dtype)
    return math.log(2.0) / jnp.log(counts / jnp.min(counts) + 1.0)


def ala_loss(logits: jax.Array, labels: jax.Array, *, class_counts, scale: float = 30.0,
             class_weights=None, where=None) -> jax.Array:
    """Adaptive logit adjustment loss.

    Args:
      logits: float [B, C] (or [E, B, C], averaged over E): cosine-head outputs s * cos theta.
      labels: int [B] in [0, C).
      class_counts: [C] training images per class, all > 0.
      scale: s, the cosine head's scale (30).
      class_weights: optional float [C] (DRW weights); the batch mean is then weighted and divided
        by the sum of the batch's target weights, as `torch.nn.CrossEntropyLoss(weight=w)`.
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar CE(z - s * DF * QF_y * onehot(y), y), float32 or wider, with DF = (1 - z_y / s) / 2
      and QF = log 2 / log(n / n_min + 1), both without gradient.
    """
    fn = "ala_loss"
    logits = checks.check_logits(logits, fn, (2, 3), "[B, C] or [E, B, C]")
    batch, num_classes = logits.shape[-2:]
    labels = checks.check_labels(labels, fn, batch, num_classes)
    counts = checks.check_counts(class_counts, fn, num_classes, positive=True)
    checks.check_positive(scale, "scale", fn)
    dtype = checks.compute_dtype(logits)
    weights = checks.check_class_weights(class_weights, fn, num_classes, dtype)
    where = checks.check_where(where, fn, batch)
    z = logits.astype(dtype)
    targets = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)  # [B, C]
    cos_y = jax.lax.stop_gradient(jnp.sum(targets * z, axis=-1)) / scale  # [..., B]
    difficulty = (1.0 - cos_y) / 2.0
    quantity = targets @ _quantity_factors(counts, dtype)  # [B], constant
    margin = scale * difficulty * quantity  # [..., B], no gradient
    return cross_entropy_unchecked(z - margin[..., None] * targets, labels, weights, where)
