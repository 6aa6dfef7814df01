"""BalPoE: balanced product of experts (Sanchez Aimar et al., CVPR 2023).

Recipe (official code `emasa/BalPoE-CalibratedLT`, methods.md section 4):
- trunk: shared stem + first stage, each expert its own remaining stages at full width (32/64 on
  CIFAR; `reduce_dimension=False` in every BalPoE config), cosine classifier times s = 30 (the
  paper says 32; the code and configs use 30, our default);
- loss: generalized logit adjustment, expert k trained with bias (1 - lambda_k) log pi, mean over
  experts (`ltx.losses.gla_loss`); CIFAR lambdas (1, 0, -1), i.e. tau_list (0, 1, 2);
- Mixup on the whole run (alpha 0.4 CIFAR-100, 0.8 CIFAR-10), the same mixed batch for all experts;
- inference: the mean of the expert logits, no bias, which is the balanced posterior when
  mean(lambda) = 0; with a known test prior q, add log q - mean(lambda) log pi
  (`prior_correction`; just log q for balanced lambdas).

Plain cross-entropy and logit adjustment are the one-expert cases lambdas = (1,) and (0,).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ltx import fusion, losses


def aggregate(outputs, params=None) -> jax.Array:
    """Outputs with logits [E, B, C] -> [B, C]: the product of experts, the mean of the logits."""
    del params
    return fusion.logit_mean(outputs.logits)


def prior_correction(logits: jax.Array, target_prior, *, train_prior=None,
                     mean_lambda: float = 0.0) -> jax.Array:
    """The ensemble's logits for a known test prior q: `logits + log q - mean_lambda * log pi`.

    The mean of the gLA experts' logits estimates log p(x|y) + mean(lambda) log pi (pi the
    training prior), so swapping in q means adding log q - mean(lambda) log pi. For BalPoE's
    balanced lambdas (mean 0) this is `logits + log q`, exactly BalPoE's
    `--posthoc_bias_correction` (`utils/util.py: adjusted_model_wrapper`), which uses the test
    loader's empirical class frequencies; for CE (lambda 1) it removes the training prior too.

    Args:
      logits: [..., C] aggregated logits.
      target_prior: [C], summing to 1.
      train_prior: [C] training class prior; needed when mean_lambda != 0.
      mean_lambda: mean of the experts' lambdas.
    """
    prior = jnp.asarray(target_prior, logits.dtype)
    out = logits + jnp.log(prior + losses.logit_adjustment.PRIOR_EPS)
    if mean_lambda:
        if train_prior is None:
            raise ValueError(f"prior_correction with mean_lambda={mean_lambda} needs train_prior")
        train = jnp.asarray(train_prior, logits.dtype)
        out = out - mean_lambda * jnp.log(train + losses.logit_adjustment.PRIOR_EPS)
    return out


def build(method_config, class_counts) -> dict:
    lambdas = tuple(float(x) for x in method_config.lambdas)
    if not lambdas:
        raise ValueError("config.method.lambdas is empty; expected one lambda per expert")
    counts = jnp.asarray(class_counts)

    def loss(outputs, labels, epoch):
        del epoch  # gLA has no schedule.
        return losses.gla_loss(outputs.logits, labels, class_counts=counts, lambdas=lambdas)

    return dict(
        num_experts=len(lambdas),
        loss=loss,
        aggregate=aggregate,
        correct_prior=functools.partial(
            prior_correction, train_prior=np.asarray(class_counts) / np.sum(class_counts),
            mean_lambda=float(np.mean(lambdas))),
    )
