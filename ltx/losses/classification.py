"""Softmax cross-entropy with PyTorch's weighted-mean semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ltx.losses import input_checks as checks


def cross_entropy(logits: jax.Array, labels: jax.Array, *, class_weights=None,
                  where=None) -> jax.Array:
    """Mean softmax cross-entropy.

    Args:
      logits: float [..., B, C]; leading axes (e.g. experts) are averaged after the batch mean.
      labels: int [B] in [0, C).
      class_weights: optional float [C]. As `torch.nn.CrossEntropyLoss(weight=w)`, the batch mean
        is then weighted and divided by the sum of the batch's target weights, sum_i w_{y_i}, not
        by B (LDAM-DRW and RIDE rely on this).
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar loss, float32 or wider.
    """
    fn = "cross_entropy"
    logits = checks.check_logits(logits, fn, range(2, 8), "[..., B, C]")
    batch, num_classes = logits.shape[-2:]
    labels = checks.check_labels(labels, fn, batch, num_classes)
    dtype = checks.compute_dtype(logits)
    weights = checks.check_class_weights(class_weights, fn, num_classes, dtype)
    where = checks.check_where(where, fn, batch)
    return cross_entropy_unchecked(logits.astype(dtype), labels, weights, where)


def cross_entropy_unchecked(logits: jax.Array, labels: jax.Array, class_weights=None,
                            where=None) -> jax.Array:
    """`cross_entropy` without its argument checks, for callers that checked them: logits
    [..., B, C], labels [B], weights [C] or None, where bool [B] or None -> scalar, in the
    dtype of `logits`."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=log_probs.dtype)
    nll = -jnp.sum(targets * log_probs, axis=-1)  # [..., B]
    weights = None if class_weights is None else targets @ class_weights  # [B]
    return jnp.mean(checks.weighted_mean(nll, weights, where))
