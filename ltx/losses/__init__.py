"""Losses shared by two or more methods: pure functions of logits, one module per family.

Every loss takes logits `[B, C]` (or expert logits `[E, B, C]`), integer labels `[B]` and static
class statistics as keyword arguments, and returns a scalar computed in float32 at least
(float64 inputs stay float64). Per-class vectors are gathered with one-hot products, never
`vec[labels]`, so the losses stay valid on batch-sharded arrays.

- `classification`: softmax cross-entropy with PyTorch's class-weighted mean (CE, CBE).
- `logit_adjustment`: logit adjustment / Balanced Softmax and BalPoE's gLA (`gla_loss`; CE, LA,
  BalPoE).
- `margin`: LDAM margins, DRW class weights and schedule, focal loss (LDAM-DRW, focal, RIDE,
  ALA + MoE).
- `distillation`: knowledge distillation (RIDE, ALA + MoE).
- `input_checks`: the shared argument checks and dtype rule, which the method homes' losses
  use too.

A loss that only one method uses lives in that method's home (`ltx.methods.<name>`), e.g.
`ltx.methods.ride.loss.ride_loss`, `ltx.methods.sade.loss.sade_loss`,
`ltx.methods.ala_moe.loss.ala_loss`, `ltx.methods.ace.loss.ace_loss`,
`ltx.methods.cbe.loss.outlier_exposure_loss`.
"""

from ltx.losses.classification import cross_entropy
from ltx.losses.distillation import distillation_loss
from ltx.losses.logit_adjustment import gla_loss, log_prior, logit_adjusted_loss
from ltx.losses.margin import (drw_class_weights, drw_schedule, focal_loss, ldam_loss,
                               ldam_margins)

__all__ = [
    "cross_entropy",
    "distillation_loss",
    "drw_class_weights",
    "drw_schedule",
    "focal_loss",
    "gla_loss",
    "ldam_loss",
    "ldam_margins",
    "log_prior",
    "logit_adjusted_loss",
]
