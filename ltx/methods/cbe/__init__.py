"""Class-balanced experts (Sharma, Yu, Fritz, Schiele, GCPR 2020, arXiv 2004.03706).

Recipe (official code `saurabhsharma1993/class-balanced-experts`; docs/methods/cbe.md), one
config, four training stages and a fusion (`ltx.stages`). The home: `data` (an expert's view of
the dataset: its classes plus a reject class), `loss` (reject-class undersampling, outlier
exposure), `fusion` (every fusion and the oracle), `finish` (the fusion step and the fused
predictor), `config` (config helpers); this module builds the method.


1. `baseline`: one ResNet with a linear classifier trained with plain cross-entropy on all
   classes (the official "generalist").
2. `many`, `medium`, `few`: one expert per shot group ('cbe' convention: n >= 100, 20 <= n < 100,
   n < 20), each initialised from the baseline (`init_from: 'baseline'`; the classifier has
   another shape and is reinitialised). An expert classifies its K classes plus a reject class,
   trained with cross-entropy on the K + 1 outputs (the official classifier outputs log_softmax
   and trains with NLL, the same loss) on its images plus reject images undersampled 1 : r,
   drawn once (`data`; r = 16 on ImageNet-LT). The official `--num_learnable`
   freezes lower blocks (`optimizer.trainable`, see `trainable_pattern`): ImageNet-LT medium 3
   (last super-block + classifier), few 1 (classifier only).
3. fusion (`config.finish = 'cbe_fusion'`, `fuse_stages`): every expert predicts the baseline's
   val and test images; `fusion` combines them by soft voting, KL
   minimisation, expert selection, stacking (fitted on val) and the official joint calibration
   (fitted on val), and routes by the true label for the oracle. Results go to
   `<workdir>/fusion.json`; the final metrics are the `method.fusion` one's (joint calibration).
   An expert stage's own report (`<workdir>/<name>/final_metrics.json`) is over its K + 1 local
   classes on all test images, the others labelled reject, with shot groups of the local counts;
   the fused reports are the ones comparable with other methods.

The alternative to the reject class, outlier exposure (`data.reject = False` on the expert
stages), keeps every training image with the same local labels (the other classes labelled K):
the loss is CE on the expert's own images plus 0.5 x the cross-entropy to the uniform
distribution on the others (`loss.outlier_exposure_loss`), over the first K outputs; the
model keeps K + 1 outputs so both variants share one data layout, and the last output is never
trained nor predicted. Joint calibration and KL fusion need a reject class; OE experts fuse with
soft voting, expert selection, stacking and the oracle.

Code vs official:
- no early stopping: each stage trains a fixed number of epochs and its last epoch is used (the
  official code stops 15 epochs after the best val accuracy, val including open images, and
  keeps the best epoch). Joint calibration likewise runs `calibration_epochs` (the official
  script stops after 30 epochs without a training-accuracy gain).
- the official feature extractor ends in an extra `fc_add` (512 -> 512, ReLU) before the
  classifier; ltx's ResNets pool straight into the classifier, so `num_learnable` 2 (classifier +
  fc_add) is the classifier only and 3 is the classifier + last stage.
- BatchNorm running statistics of frozen blocks still update during expert training, as in the
  official code (its frozen layers stay in train mode).
- reject images come from `np.random.default_rng` with `data.reject_seed` (official: the global
  NumPy generator after seed 5021), so the subset differs from the official one.
- datasets without a val split (CIFAR-LT): stacking and joint calibration are fitted with 2-fold
  cross-fitting on the test set (each half predicted by the fit on the other half), recorded as
  `fit_split` in the results.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ltx import losses
from ltx.data import shots
from ltx.methods import base
from ltx.methods.cbe import data as expert_data
from ltx.methods.cbe import finish
from ltx.methods.cbe.finish import FUSION_TABLES  # noqa: F401  The 'fusions' evaluator.
from ltx.methods.cbe.fusion import FUSIONS, LOG_ZERO, REJECT_ONLY_FUSIONS  # noqa: F401
from ltx.methods.cbe.loss import outlier_exposure_loss

STAGES = ("baseline", "expert")
EXPERTS = shots.GROUP_NAMES  # ('many', 'medium', 'few'): stage names and shot groups.


def _check_fields(cfg) -> None:
    stage = cfg.stage
    if stage not in STAGES:
        raise ValueError(f"method.stage={stage!r}; expected one of {STAGES}")
    name = cfg.fusion
    if name not in FUSIONS:
        raise ValueError(f"method.fusion={name!r}; expected one of {FUSIONS}")
    weight = cfg.oe_weight
    if not weight >= 0:
        raise ValueError(f"method.oe_weight={weight!r}; expected >= 0")


def build(method_config, class_counts) -> dict:
    """Fields of `Method` for `method.stage`.

    'baseline': CE over the C classes; the prediction is the single expert's logits, and the
    test-prior correction is CE's (remove the training prior, add the target one).
    'expert' (dataset from `dataset_view`, `class_counts` over K + 1 with the reject
    class last): CE over the K + 1 outputs, or with `method.reject=False` (which must match
    `data.reject`; `fuse_stages` checks) outlier exposure over the first K. An expert has no
    global prior correction (its classes are local).
    """
    cfg = method_config
    _check_fields(cfg)
    counts = np.asarray(class_counts)
    fields: dict[str, Any] = dict(num_experts=1)
    if cfg.stage == "baseline":
        def loss(outputs, labels, epoch):
            del epoch
            return losses.cross_entropy(outputs.logits, labels, where=outputs.mask)

        fields["loss"] = loss
        fields["correct_prior"] = base.lambda_prior_correction(counts, 1.0)
        return fields
    if counts.size < 2:
        raise ValueError(f"method.stage='expert' needs the expert's K + 1 >= 2 class counts (its "
                         f"classes, then the reject class), got {counts.size}")
    if cfg.reject:
        def loss(outputs, labels, epoch):
            del epoch
            return losses.cross_entropy(outputs.logits, labels, where=outputs.mask)

        fields["loss"] = loss
        return fields
    size = counts.size - 1
    mask = np.arange(size + 1) < size  # Local label K (the others) is outside the expert.
    weight = float(cfg.oe_weight)

    def oe_loss(outputs, labels, epoch):
        del epoch
        return outlier_exposure_loss(outputs.logits[0][:, :size], labels,
                                     in_expert_mask=mask, weight=weight, where=outputs.mask)

    def oe_aggregate(outputs, params=None):
        del params
        logits = outputs.logits[0]
        return logits.at[:, size].set(LOG_ZERO)  # The unused output never wins.

    fields.update(loss=oe_loss, aggregate=oe_aggregate)
    return fields


# --------------------------------------------------------------------------------------------


def dataset_view(config, dataset):
    """The dataset of a stage: an expert's classes plus the reject class when the config selects
    an expert (`data.expert_classes` / `data.expert_group`), else `dataset` (the baseline)."""
    return expert_data.apply(config.data, dataset)


def final_predictor(config, stage_runs):
    """The fused experts of a finished workdir, fused with `config.method.fusion`."""
    return finish.FusedPredictor(config, stage_runs)


FINISH_STEPS = {"cbe_fusion": finish.fuse_stages}
