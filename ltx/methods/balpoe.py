"""BalPoE: balanced product of experts (Sanchez Aimar et al., CVPR 2023), with cross-entropy and
logit adjustment as its one-expert cases. See docs/methods/balpoe.md.

Recipe (official code `emasa/BalPoE-CalibratedLT`):
- trunk: shared stem + first stage, each expert its own remaining stages at full width (32/64 on
  CIFAR; `reduce_dimension=False` in every BalPoE config), cosine classifier times s = 30 (the
  paper says 32; the code and configs use 30, our default);
- loss: generalized logit adjustment, expert k trained with bias (1 - lambda_k) log pi, mean over
  experts (`ltx.losses.gla_loss`); CIFAR lambdas (1, 0, -1), i.e. tau_list (0, 1, 2);
- Mixup on the whole run (alpha 0.4 CIFAR-100, 0.8 CIFAR-10), the same mixed batch for all experts;
- inference: the mean of the expert logits, no bias, which is the balanced posterior when
  mean(lambda) = 0; with a known test prior q, add log q - mean(lambda) log pi
  (`ltx.methods.prior_correction`; just log q for balanced lambdas).

'ce' is one expert with lambda 1 (plain cross-entropy), 'la' one expert with lambda 1 - tau
(logit adjustment of Menon et al. with temperature tau, 1 by default: Balanced Softmax).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltx import evaluators, losses, plots
from ltx.methods import base


def _gla(lambdas, class_counts) -> dict:
    lambdas = tuple(float(x) for x in lambdas)
    if not lambdas:
        raise ValueError("config.method.lambdas is empty; expected one lambda per expert")
    counts = jnp.asarray(class_counts)

    def loss(outputs, labels, epoch):
        del epoch  # gLA has no schedule.
        return losses.gla_loss(outputs.logits, labels, class_counts=counts, lambdas=lambdas,
                               where=outputs.mask)

    return dict(
        num_experts=len(lambdas),
        loss=loss,
        correct_prior=base.lambda_prior_correction(np.asarray(class_counts),
                                                   float(np.mean(lambdas))),
        expert_lambdas=lambdas,
    )


def build(method_config, class_counts) -> dict:
    """BalPoE. Fields: lambdas (one per expert; CIFAR (1, 0, -1))."""
    return _gla(method_config.lambdas, class_counts)


def build_ce(method_config, class_counts) -> dict:
    """Plain cross-entropy: one expert with lambda 1. No fields."""
    del method_config
    return _gla((1.0,), class_counts)


def build_la(method_config, class_counts) -> dict:
    """Logit adjustment: one expert trained on z + tau log pi, lambda = 1 - tau. Fields: tau."""
    return _gla((1.0 - float(method_config.tau),), class_counts)


def method_config(lambdas) -> ml_collections.ConfigDict:
    """`config.method` of BalPoE with these lambdas (one expert each)."""
    return ml_collections.ConfigDict(dict(name="balpoe", lambdas=tuple(float(x) for x in lambdas)))


def ce_method_config() -> ml_collections.ConfigDict:
    """`config.method` of plain cross-entropy (one expert)."""
    return ml_collections.ConfigDict(dict(name="ce", num_experts=1))


def la_method_config(tau: float = 1.0) -> ml_collections.ConfigDict:
    """`config.method` of logit adjustment with temperature `tau` (one expert)."""
    return ml_collections.ConfigDict(dict(name="la", num_experts=1, tau=float(tau)))


# -- the evaluator 'expert_priors': what each gLA expert learned --------------------------------

def implied_priors(expert_logits: np.ndarray, train_prior: np.ndarray,
                   lambdas: Sequence[float]) -> dict[str, np.ndarray]:
    """Each expert's learned class prior, estimated on a balanced set, and its expected prior.

    Expert k of a gLA-trained ensemble models z_k(x) = log p(x|y) + lambda_k log pi_y + c_k(x):
    its logits carry the prior pi^lambda_k (BalPoE Fig. 4a). The experts share the likelihood
    term, so on a balanced set the mean over x of z_k(x) - zbar(x) (zbar: the mean of the expert
    logits, which carries pi^mean(lambda)) is lambda_k log pi - mean(lambda) log pi up to a
    constant. The estimate is therefore softmax(mean_x[z_k - zbar] + mean(lambda) log pi).
    (The mean softmax of each expert over the balanced set, also returned, is nearly uniform for
    any accurate expert and so says little about its prior.)

    Args:
      expert_logits: float [E, N, C] on a class-balanced set; train_prior: float [C];
      lambdas: [E].

    Returns:
      {'estimated', 'expected', 'mean_softmax'}: float [E, C] each.
    """
    # The losses' 1e-9 keeps classes without training images finite (e.g. tiny list subsets).
    log_prior = np.log(np.asarray(train_prior, np.float64) + 1e-9)
    mean_lambda = float(np.mean(lambdas))
    relative = (expert_logits - expert_logits.mean(0, keepdims=True)).mean(1)  # [E, C]
    estimated = np.asarray(jax.nn.softmax(relative + mean_lambda * log_prior, axis=-1))
    expected = np.asarray(jax.nn.softmax(np.outer(lambdas, log_prior), axis=-1))
    mean_softmax = np.asarray(jax.nn.softmax(jnp.asarray(expert_logits), -1).mean(1))
    return {"estimated": estimated, "expected": expected, "mean_softmax": mean_softmax}


def _expert_priors(ctx: evaluators.Context) -> dict:
    return {"expert_priors": implied_priors(ctx.expert_logits, ctx.dataset.train_prior,
                                            list(ctx.method.expert_lambdas))}


def _not_gla_experts(method: base.Method) -> str | None:
    lambdas = method.expert_lambdas or ()
    if len(lambdas) == method.num_experts > 1:
        return None
    return (f"method {method.name!r} is not an ensemble of >= 2 gLA experts with known "
            "lambdas")


def _expert_priors_picture(target, report: dict, ctx: evaluators.Context) -> None:
    meta = report["meta"]
    counts = np.asarray(meta["train_class_counts"], np.float64)
    plots.expert_priors(target("expert_priors.png"), counts / counts.sum(), meta["lambdas"],
                        np.asarray(report["expert_priors"]["estimated"]))


EXPERT_PRIORS = evaluators.Evaluator(_expert_priors, check=_not_gla_experts,
                                     pictures=_expert_priors_picture, order=40)
