"""SADE/TADE's diverse-expert loss (Zhang et al., NeurIPS 2022), the method BalPoE generalizes.

Three experts are trained on the same batch with differently biased softmax cross-entropies so
that they fit three different class priors: the long-tailed training prior (forward expert), the
uniform prior (uniform expert) and an "inverse" prior that favours the tail (inverse expert).

Follows the official `Vanint/SADE-AgnosticLT`, `model/loss.py: DiverseExpertLoss`. With pi the
training prior n_c / N and z_k the (cosine-head, already scaled) logits of expert k:

    L = CE(z_1, y)                                           forward
      + CE(z_2 + log(pi + 1e-9), y)                          uniform (Balanced Softmax)
      + CE(z_3 + log(pi + 1e-9) - tau * log(pi_inv + 1e-9), y)   inverse

a *sum* over the experts (BalPoE's `gla_loss` takes the mean). tau = 2 for CIFAR and ImageNet-LT,
1 for iNaturalist and Places.

The inverse prior pi_inv is not pi^-1 and not a logit adjustment with tau = 2: the code sorts pi and
gives each class the prior value of the class at the mirrored rank (rank r -> rank C - 1 - r), so
pi_inv is a permutation of pi's values. For an exactly exponential profile (pi_c proportional to
rho^(-c/(C-1)), the CIFAR-LT profile before integer truncation) pi_c * pi_inv_c is constant, so the
inverse expert equals logit adjustment with tau + 1 (3 by default) and fits a prior proportional
to pi^-tau; BalPoE's tau = 2 expert (lambda = -1) fits pi^-1, half as far into the tail.

Code vs paper: the paper writes the inverse expert's bias as log pi - tau * log pi_inv with pi_inv
"the inversed training prior"; only the code says it is the rank-mirrored permutation. Ties in the
counts are broken by class index here (stable sort); the official `torch.sort` leaves the order of
tied priors unspecified, so with tied counts (CIFAR-100-LT's last two classes both have 5 images)
which of the tied classes receives which mirrored value may differ from a given PyTorch run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ltx.losses import input_checks as checks
from ltx.losses.classification import cross_entropy_unchecked
from ltx.losses.logit_adjustment import PRIOR_EPS, log_prior_unchecked

NUM_SADE_EXPERTS = 3


def sade_inverse_prior(class_counts) -> jax.Array:
    """SADE's "inverse" prior: float32 [C], a permutation of the training prior pi = n / N.

    Class c with ascending rank r(c) of pi receives the r-th largest prior value, i.e. the value
    of the class at the mirrored rank C - 1 - r(c); the head class gets the tail prior and the
    tail class the head prior. Ties are ranked by class index.
    """
    counts = checks.check_counts(class_counts, "sade_inverse_prior", positive=False)
    return _inverse_prior(counts, jnp.float32)


def _inverse_prior(counts, dtype) -> jax.Array:
    """`sade_inverse_prior` of checked counts, in dtype."""
    counts = jnp.asarray(counts, dtype)
    prior = counts / jnp.sum(counts)
    order = jnp.argsort(prior, stable=True)  # Class ids by ascending prior.
    return jnp.zeros_like(prior).at[order].set(prior[order][::-1])


def sade_loss(expert_logits: jax.Array, labels: jax.Array, *, class_counts,
              tau: float = 2.0, where=None) -> jax.Array:
    """SADE's diverse-expert loss: sum of the forward, uniform and inverse experts' CEs.

    Args:
      expert_logits: float [3, B, C], experts in the order (forward, uniform, inverse); cosine
        heads already multiplied by their scale (30 in SADE).
      labels: int [B] in [0, C).
      class_counts: [C] training images per class (>= 0).
      tau: strength of the inverse expert's tilt (2 for CIFAR/ImageNet-LT, 1 for iNat/Places).
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar CE(z_1) + CE(z_2 + log pi) + CE(z_3 + log pi - tau log pi_inv), float32 or wider,
      each CE a batch mean; 1e-9 is added inside every log as in the official code.
    """
    fn = "sade_loss"
    expert_logits = checks.check_logits(expert_logits, fn, (3,), "[3, B, C]", "expert_logits")
    num_experts, batch, num_classes = expert_logits.shape
    if num_experts != NUM_SADE_EXPERTS:
        raise ValueError(f"{fn}: expert_logits has {num_experts} experts; SADE's loss expects "
                         f"exactly {NUM_SADE_EXPERTS} (forward, uniform, inverse)")
    labels = checks.check_labels(labels, fn, batch, num_classes)
    counts = checks.check_counts(class_counts, fn, num_classes, positive=False)
    where = checks.check_where(where, fn, batch)
    dtype = checks.compute_dtype(expert_logits)
    z = expert_logits.astype(dtype)
    log_pi = log_prior_unchecked(counts, dtype)
    log_pi_inv = jnp.log(_inverse_prior(counts, dtype) + PRIOR_EPS)
    forward = cross_entropy_unchecked(z[0], labels, where=where)
    uniform = cross_entropy_unchecked(z[1] + log_pi, labels, where=where)
    inverse = cross_entropy_unchecked(z[2] + log_pi - tau * log_pi_inv, labels, where=where)
    return forward + uniform + inverse
