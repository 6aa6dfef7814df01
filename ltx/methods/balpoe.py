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

import jax.numpy as jnp
import ml_collections
import numpy as np

from ltx import losses
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
