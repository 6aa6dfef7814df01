"""Logit adjustment (Menon et al. 2021) and BalPoE's generalized logit adjustment (gLA).

Training on `z + tau * log(pi)` with softmax CE, where pi is the training class prior, makes the
raw logits z estimate the posterior under a prior proportional to pi^(1 - tau):

- tau = 0: plain cross-entropy (fits the long-tailed training prior);
- tau = 1: logit adjustment / Balanced Softmax (fits the uniform prior);
- tau = 2: a prior proportional to 1 / pi (BalPoE's lambda = -1 expert; SADE's inverse expert
  uses a rank-mirrored prior instead, see `ltx.losses.sade`).

BalPoE (Sanchez Aimar et al., CVPR 2023) trains one expert per bias and writes the bias through
lambda: expert k fits a prior proportional to pi^lambda_k, i.e. tau_k = 1 - lambda_k. Its official
code (`model/loss.py: BSExpertLoss`) takes `tau_list` directly; the loss is the *mean* over experts
of CE(z_k + tau_k * log(pi + 1e-9), y) (SADE sums). The experts' logits are averaged at test time,
which for mean(lambda) = 0 is consistent for the balanced error.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ltx.losses import input_checks as checks
from ltx.losses.classification import cross_entropy_unchecked

# The official code adds 1e-9 inside the log so that empty classes stay finite.
PRIOR_EPS = 1e-9


def log_prior(class_counts, dtype=jnp.float32) -> jax.Array:
    """float [C] log(n_c / N + 1e-9), for counts n_c >= 0 with a positive sum."""
    counts = checks.check_counts(class_counts, "log_prior", positive=False)
    return log_prior_unchecked(counts, dtype)


def log_prior_unchecked(counts, dtype) -> jax.Array:
    """`log_prior` of checked counts."""
    counts = jnp.asarray(counts, dtype)
    return jnp.log(counts / jnp.sum(counts) + PRIOR_EPS)


def logit_adjusted_loss(logits: jax.Array, labels: jax.Array, *, class_counts,
                        tau: float = 1.0, where=None) -> jax.Array:
    """Logit-adjusted softmax CE: CE(logits + tau * log pi, labels).

    Args:
      logits: float [B, C] (or [E, B, C], averaged over E).
      labels: int [B] in [0, C).
      class_counts: [C] training images per class (>= 0).
      tau: adjustment strength; 1 is Menon et al.'s default and Balanced Softmax.
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar loss, float32 or wider.
    """
    fn = "logit_adjusted_loss"
    logits = checks.check_logits(logits, fn, (2, 3), "[B, C] or [E, B, C]")
    batch, num_classes = logits.shape[-2:]
    labels = checks.check_labels(labels, fn, batch, num_classes)
    counts = checks.check_counts(class_counts, fn, num_classes, positive=False)
    dtype = checks.compute_dtype(logits)
    where = checks.check_where(where, fn, batch)
    adjusted = logits.astype(dtype) + tau * log_prior_unchecked(counts, dtype)
    return cross_entropy_unchecked(adjusted, labels, where=where)


def gla_loss(expert_logits: jax.Array, labels: jax.Array, *, class_counts,
             lambdas: Sequence[float], where=None) -> jax.Array:
    """BalPoE's generalized logit-adjusted loss, mean over experts.

    Args:
      expert_logits: float [E, B, C] (cosine heads: already times the scale).
      labels: int [B] in [0, C).
      class_counts: [C] training images per class (>= 0).
      lambdas: E floats; expert k targets the prior pi^lambda_k and is trained with
        tau_k = 1 - lambda_k. BalPoE's CIFAR default is lambdas (1, 0, -1) = tau (0, 1, 2).
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      (1/E) sum_k CE(z_k + (1 - lambda_k) log pi, y), float32 or wider.
    """
    fn = "gla_loss"
    expert_logits = checks.check_logits(expert_logits, fn, (3,), "[E, B, C]", "expert_logits")
    num_experts, batch, num_classes = expert_logits.shape
    if len(lambdas) != num_experts:
        raise ValueError(f"{fn}: {len(lambdas)} lambdas for {num_experts} experts; expected "
                         "one lambda per expert")
    labels = checks.check_labels(labels, fn, batch, num_classes)
    counts = checks.check_counts(class_counts, fn, num_classes, positive=False)
    dtype = checks.compute_dtype(expert_logits)
    taus = 1.0 - jnp.asarray(lambdas, dtype)  # [E]
    biases = taus[:, None, None] * log_prior_unchecked(counts, dtype)  # [E, 1, C]
    where = checks.check_where(where, fn, batch)
    return cross_entropy_unchecked(expert_logits.astype(dtype) + biases, labels, where=where)
