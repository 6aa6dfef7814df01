"""The single-model baselines of LDAM-DRW (Cao et al., NeurIPS 2019): LDAM with deferred
re-weighting, and focal loss.

Recipe (official code `kaidic/LDAM-DRW`, `cifar_train.py` and `losses.py`; methods.md section 1):
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

import jax.numpy as jnp
import numpy as np

from ltx import losses
from ltx.methods import balpoe


def _drw_weights(class_counts, drw_epoch: int, beta: float):
    """`weights(epoch)`: all ones before `drw_epoch`, the class-balanced weights from it on."""
    if drw_epoch < 0:
        raise ValueError(f"method.drw_epoch={drw_epoch}; expected >= 0 (a large value turns DRW "
                         "off)")
    balanced = jnp.asarray(losses.drw_class_weights(np.asarray(class_counts), beta=beta),
                           jnp.float32)
    ones = jnp.ones_like(balanced)
    # With all-ones weights PyTorch's weighted mean is the plain mean, so one code path serves
    # both phases without recompiling at the switch.
    return lambda epoch: jnp.where(epoch >= drw_epoch, balanced, ones)


def _single_model(loss, class_counts, *, mean_lambda: float) -> dict:
    counts = np.asarray(class_counts)
    return dict(
        num_experts=1,
        loss=loss,
        aggregate=balpoe.aggregate,
        correct_prior=lambda logits, prior: balpoe.prior_correction(
            logits, prior, train_prior=counts / counts.sum(), mean_lambda=mean_lambda),
    )


def build_ldam_drw(method_config, class_counts) -> dict:
    """LDAM with DRW. Fields: max_margin (0.5), scale (30), drw_epoch (160), beta (0.9999).

    The test-prior correction treats the model as balanced (mean lambda 0): DRW's re-weighted
    last phase is meant to fit the uniform prior.
    """
    cfg = method_config
    counts = np.asarray(class_counts)
    weights = _drw_weights(counts, cfg.drw_epoch, cfg.beta)

    def loss(outputs, labels, epoch):
        return losses.ldam_loss(outputs.logits[0], labels, class_counts=counts,
                                max_margin=cfg.max_margin, scale=cfg.scale,
                                class_weights=weights(epoch))

    return _single_model(loss, counts, mean_lambda=0.0)


def build_focal(method_config, class_counts) -> dict:
    """Focal loss. Fields: gamma (1.0), drw_epoch (a value >= num_epochs: no re-weighting),
    beta. The correction treats the model as fitting the training prior (mean lambda 1)."""
    cfg = method_config
    counts = np.asarray(class_counts)
    weights = _drw_weights(counts, cfg.drw_epoch, cfg.beta)

    def loss(outputs, labels, epoch):
        return losses.focal_loss(outputs.logits[0], labels, gamma=cfg.gamma,
                                 class_weights=weights(epoch))

    return _single_model(loss, counts, mean_lambda=1.0)
