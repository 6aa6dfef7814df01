"""Class-balanced losses (Cui et al., "Class-Balanced Loss Based on Effective Number of
Samples", CVPR 2019): softmax, sigmoid and focal losses with per-class weights w [C], as pure
functions of logits.

The weights are the inverse effective numbers `ltx.losses.drw_class_weights` (w_c proportional
to (1 - beta) / (1 - beta^n_c), summing to C). Shared by the class-balanced-loss method
(`ltx.methods.cb_loss`, whose docs give the official code's reductions) and weight balancing's
second stage (`ltx.methods.weight_balancing`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ltx.losses import input_checks as checks
from ltx.losses.margin import per_example_nll

# 'batch': sum_i w_{y_i} l_i / B (the official TensorFlow reduction); 'weights': / sum_i w_{y_i}
# (PyTorch's weighted mean, LDAM-DRW's CE + DRW). Softmax only.
REDUCTIONS = ("batch", "weights")


def _prepare(logits, labels, class_weights, where, fn):
    logits = checks.check_logits(logits, fn, range(2, 8), "[..., B, C]")
    batch, num_classes = logits.shape[-2:]
    labels = checks.check_labels(labels, fn, batch, num_classes)
    dtype = checks.compute_dtype(logits)
    weights = checks.check_class_weights(class_weights, fn, num_classes, dtype)
    where = checks.check_where(where, fn, batch)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)  # [B, C]
    sample_weights = None if weights is None else onehot @ weights  # [B]
    return logits.astype(dtype), onehot, sample_weights, where


def cb_softmax_loss(logits: jax.Array, labels: jax.Array, *, class_weights=None,
                    reduction: str = "batch", where=None) -> jax.Array:
    """Class-balanced softmax cross-entropy.

      'batch':   L = (1/B) sum_i w_{y_i} * (-log softmax(z_i)_{y_i})
      'weights': L = sum_i w_{y_i} * (-log softmax(z_i)_{y_i}) / sum_i w_{y_i}

    Args:
      logits: float [..., B, C]; leading axes (experts) are averaged after the batch reduction.
      labels: int [B] in [0, C).
      class_weights: optional float [C] (`ltx.losses.drw_class_weights`); None: all ones.
      reduction: 'batch' (Cui et al.'s TensorFlow code) or 'weights' (PyTorch's weighted mean).
      where: optional bool [B]; only these rows count, as if the batch were that smaller one.

    Returns:
      Scalar, float32 or wider.
    """
    fn = "cb_softmax_loss"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction={reduction!r}; expected one of {REDUCTIONS}")
    logits, onehot, sample_weights, where = _prepare(logits, labels, class_weights, where, fn)
    nll = per_example_nll(logits, onehot)  # [..., B]
    if sample_weights is None:
        return jnp.mean(checks.batch_mean(nll, where))
    if reduction == "weights":
        return jnp.mean(checks.weighted_mean(nll, sample_weights, where))
    return jnp.mean(checks.batch_mean(sample_weights * nll, where))


def _binary_terms(logits, onehot, gamma):
    """Per-entry BCE(z, t) [..., B, C], times (1 - p_t)^gamma when gamma is given.

    BCE = softplus(z) - t z. The modulating factor is exp(-gamma (t z + softplus(-z))), which is
    sigmoid(-z)^gamma for t = 1 and sigmoid(z)^gamma for t = 0, i.e. (1 - p_t)^gamma, written in
    log space as the official code does so that it stays finite and differentiable for any z.
    """
    bce = jax.nn.softplus(logits) - onehot * logits
    if gamma is None:
        return bce
    modulator = jnp.exp(-gamma * (onehot * logits + jax.nn.softplus(-logits)))
    return modulator * bce


def _sigmoid_family(logits, labels, class_weights, where, gamma, fn):
    logits, onehot, sample_weights, where = _prepare(logits, labels, class_weights, where, fn)
    per_example = jnp.sum(_binary_terms(logits, onehot, gamma), axis=-1)  # [..., B]
    if sample_weights is not None:
        per_example = sample_weights * per_example
    # The official code divides the sum by the number of positive labels, one per example.
    return jnp.mean(checks.batch_mean(per_example, where))


def cb_sigmoid_loss(logits: jax.Array, labels: jax.Array, *, class_weights=None,
                    where=None) -> jax.Array:
    """Class-balanced sigmoid (one-vs-all binary) cross-entropy.

      L = (1/B) sum_i w_{y_i} sum_c -[t_ic log sigmoid(z_ic) + (1 - t_ic) log(1 - sigmoid(z_ic))]

    with t_ic = [y_i = c]. Args as `cb_softmax_loss` (no reduction choice).
    """
    return _sigmoid_family(logits, labels, class_weights, where, None, "cb_sigmoid_loss")


def cb_focal_loss(logits: jax.Array, labels: jax.Array, *, gamma: float = 1.0,
                  class_weights=None, where=None) -> jax.Array:
    """Class-balanced sigmoid focal loss (Lin et al.'s focal loss on one-vs-all sigmoids).

      p_t = sigmoid(z_ic) if t_ic = 1 else 1 - sigmoid(z_ic)
      L   = (1/B) sum_i w_{y_i} sum_c -(1 - p_t)^gamma log p_t

    gamma = 0 is `cb_sigmoid_loss`. Unlike ltx's 'focal' (LDAM-DRW's softmax focal loss), each
    class is a binary problem and the class weight multiplies, not enters, the modulation.

    Args:
      gamma: focusing parameter >= 0 (1.0 in the official CIFAR script, 0.5 in its ImageNet and
        iNaturalist scripts).
      Others as `cb_softmax_loss`.
    """
    fn = "cb_focal_loss"
    checks.check_positive(gamma, "gamma", fn, allow_zero=True)
    return _sigmoid_family(logits, labels, class_weights, where, gamma, fn)
