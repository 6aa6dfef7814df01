"""SADE / TADE's diverse experts (Zhang et al., NeurIPS 2022), the method BalPoE generalises.
See docs/methods/sade.md.

Recipe (official code `Vanint/SADE-AgnosticLT`): the RIDE expert backbone without a router,
CIFAR ResNet-32 sharing the stem and stage 1 with reduced expert widths (24/48,
`reduce_dimension=True`), cosine heads x 30; `ltx.methods.sade.loss.sade_loss`: a forward expert
(CE), a uniform expert (logit adjustment) and an inverse expert (a rank-mirrored prior with
tau = 2 on CIFAR and ImageNet-LT, 1 on iNaturalist and Places-LT), summed; BalPoE's CIFAR
schedule without Mixup. Prediction: the mean of the expert logits. SADE's test-time
self-supervised aggregation (expert weights learned on the unlabelled test set) is
`ltx.methods.sade.test_time`, run by `ltx-eval --test_time_aggregation`.
"""

from __future__ import annotations

import numpy as np

from ltx.methods import base
from ltx.methods.sade.loss import NUM_SADE_EXPERTS, sade_inverse_prior, sade_loss  # noqa: F401


def build(method_config, class_counts) -> dict:
    """Fields: tau (2.0)."""
    counts = np.asarray(class_counts)
    tau = float(method_config.tau)

    def loss(outputs, labels, epoch):
        del epoch
        return sade_loss(outputs.logits, labels, class_counts=counts, tau=tau,
                         where=outputs.mask)

    return dict(
        num_experts=NUM_SADE_EXPERTS,
        loss=loss,
        # Treated as balanced (mean lambda 0), as SADE evaluates the plain mean on every test
        # distribution; on an exponential profile its experts' lambdas are about 1, 0, -tau.
        correct_prior=base.balanced_prior_correction,
    )
