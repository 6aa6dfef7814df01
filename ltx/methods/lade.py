"""LADE: label distribution disentangling (Hong et al., CVPR 2021). See docs/methods/lade.md.

Official code `hyperconnect/LADE`: `loss/PriorCELoss.py`, `loss/LADELoss.py`, `run_networks.py`
(how the two losses are combined and how the model predicts), `config/<dataset>/lade.yaml` and
the README's launch commands (whose `--alpha`, `--remine_lambda` and `--lr` override the yaml).

One model with a linear classifier; z its logits [B, C], pi_c = n_c / N the training prior, B the
(real) images of the batch, n_c^B how many of them have label c:

    L = CE(z + log(pi + 1e-9), y) + alpha * R(z, y)

    R = -sum_c pi_c * (m_c - T_c - lambda * T_c^2)
    m_c = sum_{i: y_i = c} z_ic / (n_c^B + 1e-8)                         (0 when c is absent)
    T_c = log((1/B) * sum_i exp(z_ic - log(pi_c + 1e-9) + log(1/C + 1e-9)))  (every image i)

The first term is `PriorCELoss` ("LADE-CE" in its comment; Balanced Softmax, i.e. logit adjustment
with tau = 1), weight 1 (`PerformanceLoss`). R is `LADELoss` (`RouteWeightLoss`, weight alpha):
the negated, pi-weighted sum over classes of the regularised (ReMINE) Donsker-Varadhan estimate
m_c - T_c of each class, whose penalty lambda * T_c^2 (`remine_lambda`) pulls every log-mean-exp
T_c towards 0. T_c runs over the whole batch, so a class absent from the batch still counts, with
m_c = 0 (the 1e-8 keeps 0 / 0 finite): its term is pi_c (T_c + lambda T_c^2).

Prediction: the official evaluation adds log q, q the evaluated split's class frequencies, to the
logits (`run_networks.py: eval`, every config with a `RouteWeightLoss`). On a uniform test set
that is a constant, so the plain prediction is z itself with no training prior added (the
PriorCE training makes z balanced); for a known test prior q, `correct_prior` adds log q, the
test-agnostic protocol of `ltx-eval` (`ltx.methods.base.balanced_prior_correction`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from ltx.losses import input_checks as checks
from ltx.losses.classification import cross_entropy_unchecked
from ltx.losses.logit_adjustment import PRIOR_EPS, log_prior_unchecked
from ltx.methods import base

# The official per-class mean divides by n_c^B + 1e-8 (`mine_lower_bound`).
COUNT_EPS = 1e-8

# (alpha, remine_lambda) of the README's launch commands, which override the yaml's `weight` and
# `remine_lambda` (`utils.update`). CIFAR-100-LT: the yaml says remine_lambda 0.1, the README
# command (ratio 100) 0.01; iNaturalist's command sets no --remine_lambda, so the yaml's 0.5 holds.
OFFICIAL_DEFAULTS = {
    "cifar100_lt": (0.1, 0.01),
    "imagenet_lt": (0.05, 0.5),
    "places_lt": (0.005, 0.1),
    "inaturalist2018": (0.05, 0.5),
}


def _check_inputs(fn, logits, labels, class_counts, where):
    logits = checks.check_logits(logits, fn, (2,), "[B, C]")
    batch, num_classes = logits.shape
    labels = checks.check_labels(labels, fn, batch, num_classes)
    counts = checks.check_counts(class_counts, fn, num_classes, positive=False)
    where = checks.check_where(where, fn, batch)
    dtype = checks.compute_dtype(logits)
    return logits.astype(dtype), labels, counts, where


def _regularizer(z: jax.Array, labels: jax.Array, counts, remine_lambda: float,
                 where) -> jax.Array:
    """R of checked inputs: z [B, C] in the compute dtype -> scalar."""
    dtype = z.dtype
    batch, num_classes = z.shape
    prior = jnp.asarray(counts, dtype)
    prior = prior / jnp.sum(prior)  # `cls_weight` and the prior: no epsilon in the weight.
    rows = jnp.ones((batch,), bool) if where is None else where
    member = (jax.nn.one_hot(labels, num_classes, dtype=dtype) > 0) & rows[:, None]  # [B, C]
    # jnp.where, not a product: a padded row's logits may be anything and get no gradient.
    class_sums = jnp.sum(jnp.where(member, z, 0.0), axis=0)
    class_counts_in_batch = jnp.sum(member.astype(dtype), axis=0)
    mean_logit = class_sums / (class_counts_in_batch + COUNT_EPS)  # m_c [C]
    shifted = z - jnp.log(prior + PRIOR_EPS) + math.log(1.0 / num_classes + PRIOR_EPS)
    real = jnp.maximum(jnp.sum(rows.astype(dtype)), 1.0)
    log_mean_exp = (jax.nn.logsumexp(shifted, axis=0, where=rows[:, None])
                    - jnp.log(real))  # T_c [C]
    estimate = mean_logit - log_mean_exp - remine_lambda * jnp.square(log_mean_exp)
    return -jnp.sum(prior * estimate)


def lade_regularizer(logits: jax.Array, labels: jax.Array, *, class_counts,
                     remine_lambda: float = 0.1, where=None) -> jax.Array:
    """LADE's regulariser R (the official `LADELoss`), as in the module docstring.

    Args:
      logits: float [B, C] of one model (a linear head's, unscaled).
      labels: int [B] in [0, C).
      class_counts: [C] training images per class (>= 0); pi = counts / sum.
      remine_lambda: lambda >= 0 of the ReMINE penalty lambda * T_c^2 (`LADELoss`'s default 0.1).
      where: optional bool [B]; only these rows count, as if the batch were that smaller one
        (B in the log-mean-exp is their number).

    Returns:
      Scalar -sum_c pi_c (m_c - T_c - lambda T_c^2), float32 or wider.
    """
    fn = "lade_regularizer"
    checks.check_positive(remine_lambda, "remine_lambda", fn, allow_zero=True)
    z, labels, counts, where = _check_inputs(fn, logits, labels, class_counts, where)
    return _regularizer(z, labels, counts, remine_lambda, where)


def lade_loss(logits: jax.Array, labels: jax.Array, *, class_counts, alpha: float,
              remine_lambda: float, where=None) -> jax.Array:
    """LADE's training loss: PriorCE + alpha * R, as the official `run_networks.batch_loss`.

    Args:
      logits: float [B, C] of one model.
      labels: int [B] in [0, C).
      class_counts: [C] training images per class (>= 0).
      alpha: weight >= 0 of the regulariser (`RouteWeightLoss.weight`, the README's --alpha);
        0 leaves PriorCE alone, which is logit adjustment with tau = 1 (Balanced Softmax).
      remine_lambda: lambda >= 0 of the regulariser's ReMINE penalty.
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar CE(z + log(pi + 1e-9), y) + alpha * R(z, y), float32 or wider.
    """
    fn = "lade_loss"
    checks.check_positive(alpha, "alpha", fn, allow_zero=True)
    checks.check_positive(remine_lambda, "remine_lambda", fn, allow_zero=True)
    z, labels, counts, where = _check_inputs(fn, logits, labels, class_counts, where)
    prior_ce = cross_entropy_unchecked(z + log_prior_unchecked(counts, z.dtype), labels,
                                       where=where)
    return prior_ce + alpha * _regularizer(z, labels, counts, remine_lambda, where)


def _field(method_config, name: str) -> float:
    value = method_config.get(name)
    if value is None:
        raise ValueError(f"config.method.{name} is missing; LADE needs alpha and remine_lambda "
                         "(ltx.methods.lade.method_config gives the official ones)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"config.method.{name}={value!r}; expected a finite number >= 0")
    return float(value)


def build(method_config, class_counts) -> dict:
    """LADE. Fields: alpha, remine_lambda (`method_config(dataset)` sets the official ones).

    One model; the plain prediction is its logits, and a known test prior q is applied as
    logits + log q (the model is balanced: lambda 0 in `ltx.methods.prior_correction`).
    """
    alpha = _field(method_config, "alpha")
    remine_lambda = _field(method_config, "remine_lambda")
    counts = checks.check_counts(class_counts, "lade", positive=False)

    def loss(outputs, labels, epoch):
        del epoch  # No schedule.
        return lade_loss(outputs.logits[0], labels, class_counts=counts, alpha=alpha,
                         remine_lambda=remine_lambda, where=outputs.mask)

    return dict(num_experts=1, loss=loss, correct_prior=base.balanced_prior_correction)


def method_config(dataset: str = "cifar100_lt", *, alpha: float | None = None,
                  remine_lambda: float | None = None) -> ml_collections.ConfigDict:
    """`config.method` of LADE with the official (alpha, remine_lambda) of `dataset`
    (`OFFICIAL_DEFAULTS`), each replaceable."""
    if dataset not in OFFICIAL_DEFAULTS:
        raise ValueError(f"dataset={dataset!r}; expected one of {sorted(OFFICIAL_DEFAULTS)} "
                         "(or give alpha and remine_lambda to another dataset's values)")
    default_alpha, default_lambda = OFFICIAL_DEFAULTS[dataset]
    return ml_collections.ConfigDict(dict(
        name="lade", num_experts=1,
        alpha=float(default_alpha if alpha is None else alpha),
        remine_lambda=float(default_lambda if remine_lambda is None else remine_lambda)))

