"""The single-model baselines of LDAM-DRW (Cao et al., NeurIPS 2019): LDAM with deferred
re-weighting, and focal loss.

Recipe (official code `kaidic/LDAM-DRW`, `cifar_train.py` and `losses.py`;
docs/methods/ldam_drw.md):
- LDAM-DRW: ResNet-32 with a cosine (`NormedLinear`) head; `ldam_loss` with margins
  0.5 * (n_min / n_c)^(1/4) on the target logit and scale s = 30; DRW: class-balanced weights
  (beta 0.9999, normalised to sum to C) from epoch `drw_epoch` (160, 0-indexed: `idx = e // 160`),
  plain mean before; SGD lr 0.1 without Nesterov, weight decay 2e-4, warmup 5 then x0.01 at 160
  and 180; crop + flip; 200 epochs.
- focal: a linear head (`use_norm` is only for LDAM), `focal_loss` with gamma = 1 (the script's
  value), optionally with the same DRW switch.

The official script evaluates every epoch on the test set and keeps the best (test-set model
selection); ltx evaluates the last epoch, as BalPoE does.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from ltx import losses
from ltx.methods import base


def method_config(name: str, *, drw_epoch: int, gamma: float = 1.0) -> ml_collections.ConfigDict:
    """`config.method` of LDAM-DRW ('ldam_drw') or focal loss ('focal'), LDAM-DRW's defaults."""
    return ml_collections.ConfigDict(dict(
        name=name, num_experts=1, max_margin=0.5, scale=30.0, drw_epoch=drw_epoch,
        beta=0.9999, gamma=gamma))


def set_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """LDAM-DRW's optimizer: SGD 0.1 without Nesterov, wd 2e-4, warmup 5, x0.01 at 80%/90%."""
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 2e-4
    c.schedule.decay_factor = 0.01
    return c


def _single_model(loss, class_counts, *, mean_lambda: float) -> dict:
    return dict(num_experts=1, loss=loss,
                correct_prior=base.lambda_prior_correction(class_counts, mean_lambda))


def build_ldam_drw(method_config, class_counts) -> dict:
    """LDAM with DRW. Fields: max_margin (0.5), scale (30), drw_epoch (160), beta (0.9999).

    The test-prior correction treats the model as balanced (mean lambda 0): DRW's re-weighted
    last phase is meant to fit the uniform prior.
    """
    cfg = method_config
    counts = np.asarray(class_counts)
    weights = losses.drw_schedule(counts, cfg.drw_epoch, cfg.beta)

    def loss(outputs, labels, epoch):
        return losses.ldam_loss(outputs.logits[0], labels, class_counts=counts,
                                max_margin=cfg.max_margin, scale=cfg.scale,
                                class_weights=weights(epoch), where=outputs.mask)

    return _single_model(loss, counts, mean_lambda=0.0)


def build_focal(method_config, class_counts) -> dict:
    """Focal loss. Fields: gamma (1.0), drw_epoch (a value >= num_epochs: no re-weighting),
    beta. The correction treats the model as fitting the training prior (mean lambda 1)."""
    cfg = method_config
    counts = np.asarray(class_counts)
    weights = losses.drw_schedule(counts, cfg.drw_epoch, cfg.beta)

    def loss(outputs, labels, epoch):
        return losses.focal_loss(outputs.logits[0], labels, gamma=cfg.gamma,
                                 class_weights=weights(epoch), where=outputs.mask)

    return _single_model(loss, counts, mean_lambda=1.0)
