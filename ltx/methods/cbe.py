"""Class-balanced experts (Sharma, Yu, Fritz, Schiele, GCPR 2020, arXiv 2004.03706).

Recipe (official code `saurabhsharma1993/class-balanced-experts`; methods.md section 6.2), one
config, four training stages and a fusion (`ltx.stages`):

1. `baseline`: one ResNet with a linear classifier trained with plain cross-entropy on all
   classes (the official "generalist").
2. `many`, `medium`, `few`: one expert per shot group ('cbe' convention: n >= 100, 20 <= n < 100,
   n < 20), each initialised from the baseline (`init_from: 'baseline'`; the classifier has
   another shape and is reinitialised). An expert classifies its K classes plus a reject class,
   trained with cross-entropy on the K + 1 outputs (the official classifier outputs log_softmax
   and trains with NLL, the same loss) on its images plus reject images undersampled 1 : r,
   drawn once (`ltx.data.class_subsets`; r = 16 on ImageNet-LT). The official `--num_learnable`
   freezes lower blocks (`optimizer.trainable`, see `trainable_pattern`): ImageNet-LT medium 3
   (last super-block + classifier), few 1 (classifier only).
3. fusion (`config.finish = 'cbe_fusion'`, `fuse_stages`): every expert predicts the baseline's
   val and test images; `ltx.fusion.class_balanced` combines them by soft voting, KL
   minimisation, expert selection, stacking (fitted on val) and the official joint calibration
   (fitted on val), and routes by the true label for the oracle. Results go to
   `<workdir>/fusion.json`; the final metrics are the `method.fusion` one's (joint calibration).
   An expert stage's own report (`<workdir>/<name>/final_metrics.json`) is over its K + 1 local
   classes on all test images, the others labelled reject, with shot groups of the local counts;
   the fused reports are the ones comparable with other methods.

The alternative to the reject class, outlier exposure (`data.reject = False` on the expert
stages), keeps every training image with the same local labels (the other classes labelled K):
the loss is CE on the expert's own images plus 0.5 x the cross-entropy to the uniform
distribution on the others (`ltx.losses.outlier_exposure_loss`), over the first K outputs; the
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

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from ltx import evaluation, fusion, losses
from ltx.data import class_subsets, shots
from ltx.methods import balpoe

STAGES = ("baseline", "expert")
EXPERTS = shots.GROUP_NAMES  # ('many', 'medium', 'few'): stage names and shot groups.
FUSIONS = ("soft_voting", "kl_fusion", "expert_selection", "stacking", "joint_calibration")
REJECT_ONLY_FUSIONS = ("kl_fusion", "joint_calibration")
REPORT_COLUMNS = ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece")


# --------------------------------------------------------------------------------------------
# Config helpers (used by configs/*_cbe.py).
# --------------------------------------------------------------------------------------------


def method_config(**overrides) -> ml_collections.ConfigDict:
    """`config.method` of the class-balanced experts with the official fusion settings.

    Fields: stage ('baseline' | 'expert'), num_experts (1 per run), reject (True: reject class;
    False: outlier exposure; must equal `data.reject`, `cbe_stages` sets both), oe_weight (0.5,
    outlier exposure), fusion (the reported one), experts (stage names fused, in order),
    kl_iterations, stacking_{steps, lr, weight_decay}, calibration_{epochs, batch_size, lr,
    momentum, weight_decay, lr_step_epochs} (official: SGD 0.1, momentum 0.9, wd 5e-4,
    StepLR(30, 0.1), batch 256), fusion_seed (minibatch order of the calibration,
    cross-fitting folds).
    """
    c = ml_collections.ConfigDict(dict(
        name="cbe", stage="baseline", num_experts=1, reject=True, oe_weight=0.5,
        fusion="joint_calibration", experts=EXPERTS, kl_iterations=200,
        stacking_steps=500, stacking_lr=0.05, stacking_weight_decay=1e-4,
        calibration_epochs=60, calibration_batch_size=256, calibration_lr=0.1,
        calibration_momentum=0.9, calibration_weight_decay=5e-4, calibration_lr_step_epochs=30,
        fusion_seed=0))
    c.update(overrides)
    return c


def add_data_fields(c: ml_collections.ConfigDict, *, open_ratio: int = 16,
                    reject: bool = True) -> ml_collections.ConfigDict:
    """Adds the expert fields to `config.data` (`ltx.data.class_subsets`); the baseline leaves
    expert_classes and expert_group empty (all classes)."""
    c.data.expert_classes = ()
    c.data.expert_group = ""
    c.data.expert_shot_convention = "cbe"
    c.data.open_ratio = open_ratio
    c.data.reject = reject
    c.data.reject_seed = class_subsets.DEFAULT_REJECT_SEED
    return c


def configure(c: ml_collections.ConfigDict, *, reject: bool, open_ratio: int
              ) -> ml_collections.ConfigDict:
    """Turns a dataset's base config into the class-balanced experts' baseline config: the
    method (`method_config`; soft voting is the reported fusion for outlier-exposure experts,
    which have no reject class), the official linear classifier, SGD without Nesterov, the 'cbe'
    shot groups and the expert data fields (`add_data_fields`)."""
    c.method = method_config()
    if not reject:
        c.method.fusion = "soft_voting"
    c.model.head = "linear"
    c.optimizer.nesterov = False
    c.eval.shot_convention = "cbe"
    return add_data_fields(c, open_ratio=open_ratio)


def num_stages(model_config) -> int:
    """Stages of the trunk (3 for the CIFAR ResNet-32, 4 for the ImageNet ResNets)."""
    from ltx import models  # Local: models import flax; configs only need this function.
    if model_config.name == "resnet32":
        return len(model_config.widths)
    return len(model_config.get("widths", models.IMAGENET_WIDTHS))


def trainable_pattern(model_config, num_learnable: int) -> str:
    """`optimizer.trainable` for the official `--num_learnable` (regex over parameter paths).

    -1: everything ('' = no freezing); 1: the classifier only; 2: the classifier and the official
    extra fc layer, which ltx's ResNets lack, hence also the classifier only; 3 .. 2 + S: the
    classifier and the last num_learnable - 2 of the S stages (the stem stays frozen). The
    classifier is `experts/head/...`; stage i is `stage{i}/...` in the shared trunk or
    `experts/stage{i}/...` in the expert branch, so the pattern does not depend on
    `model.num_shared_stages`.
    """
    stages = num_stages(model_config)
    if isinstance(num_learnable, bool) or not isinstance(num_learnable, int) or not (
            num_learnable == -1 or 1 <= num_learnable <= stages + 2):
        raise ValueError(f"num_learnable={num_learnable!r}; expected -1 (all), 1 (classifier), "
                         f"2 (classifier + fc, here the classifier) or 3..{stages + 2} (classifier"
                         f" + the last 1..{stages} of the {stages} stages)")
    if num_learnable == -1:
        return ""
    head = r"^experts/head/"
    if num_learnable <= 2:
        return head
    last = range(stages - (num_learnable - 2), stages)
    return head + r"|(^|/)stage(" + "|".join(str(i) for i in last) + r")/"


def cbe_stages(c: ml_collections.ConfigDict, *, expert_epochs: int, open_ratios=(16, 16, 16),
               num_learnable=(-1, 3, 1), reject: bool = True, expert_overrides=None,
               per_expert_overrides=None) -> ml_collections.ConfigDict:
    """Adds the stages 'baseline', 'many', 'medium', 'few' and the fusion to `c`.

    `c` is the baseline's config (method `method_config()`, data fields `add_data_fields`). Each
    expert stage starts from the baseline's checkpoint, selects its shot group at build time
    (`data.expert_group`, the training counts and `data.expert_shot_convention`), trains
    `expert_epochs` epochs with open ratio `open_ratios[i]` and `optimizer.trainable` from
    `num_learnable[i]` (official ImageNet-LT: -1, 3, 1), plus `expert_overrides` (all experts;
    e.g. the schedule) and `per_expert_overrides[name]`. `reject` sets `data.reject` and
    `method.reject` together (False: outlier exposure).
    """
    if len(open_ratios) != len(EXPERTS) or len(num_learnable) != len(EXPERTS):
        raise ValueError(f"open_ratios={tuple(open_ratios)} and num_learnable="
                         f"{tuple(num_learnable)}; expected one per expert {EXPERTS}")
    c.data.reject = bool(reject)
    c.method.reject = bool(reject)
    c.stage_order = ("baseline",) + EXPERTS
    c.stages = ml_collections.ConfigDict()
    c.stages.baseline = ml_collections.ConfigDict({"method": {"stage": "baseline"}})
    for name, ratio, learnable in zip(EXPERTS, open_ratios, num_learnable):
        stage = ml_collections.ConfigDict({
            "init_from": "baseline", "num_epochs": expert_epochs,
            "method": {"stage": "expert"},
            "data": {"expert_group": name, "open_ratio": ratio},
            "optimizer": {"trainable": trainable_pattern(c.model, learnable)}})
        for extra in (expert_overrides, (per_expert_overrides or {}).get(name)):
            if extra:
                stage.update(ml_collections.ConfigDict(dict(extra)))
        c.stages[name] = stage
    c.finish = "cbe_fusion"
    return c


# --------------------------------------------------------------------------------------------
# The method.
# --------------------------------------------------------------------------------------------


def _check_fields(cfg) -> None:
    stage = cfg.get("stage", "baseline")
    if stage not in STAGES:
        raise ValueError(f"method.stage={stage!r}; expected one of {STAGES}")
    name = cfg.get("fusion", "joint_calibration")
    if name not in FUSIONS:
        raise ValueError(f"method.fusion={name!r}; expected one of {FUSIONS}")
    weight = cfg.get("oe_weight", 0.5)
    if not weight >= 0:
        raise ValueError(f"method.oe_weight={weight!r}; expected >= 0")


def build(method_config, class_counts) -> dict:
    """Fields of `Method` for `method.stage`.

    'baseline': CE over the C classes; the prediction is the single expert's logits, and the
    test-prior correction is CE's (remove the training prior, add the target one).
    'expert' (dataset from `ltx.data.class_subsets`, `class_counts` over K + 1 with the reject
    class last): CE over the K + 1 outputs, or with `method.reject=False` (which must match
    `data.reject`; `fuse_stages` checks) outlier exposure over the first K. An expert has no
    global prior correction (its classes are local).
    """
    cfg = method_config
    _check_fields(cfg)
    counts = np.asarray(class_counts)
    fields: dict[str, Any] = dict(num_experts=1, aggregate=balpoe.aggregate)
    if cfg.get("stage", "baseline") == "baseline":
        def loss(outputs, labels, epoch):
            del epoch
            return losses.cross_entropy(outputs.logits, labels)

        fields["loss"] = loss
        fields["correct_prior"] = lambda logits, prior: balpoe.prior_correction(
            logits, prior, train_prior=counts / counts.sum(), mean_lambda=1.0)
        return fields
    if counts.size < 2:
        raise ValueError(f"method.stage='expert' needs the expert's K + 1 >= 2 class counts (its "
                         f"classes, then the reject class), got {counts.size}")
    if cfg.get("reject", True):
        def loss(outputs, labels, epoch):
            del epoch
            return losses.cross_entropy(outputs.logits, labels)

        fields["loss"] = loss
        return fields
    size = counts.size - 1
    mask = np.arange(size + 1) < size  # Local label K (the others) is outside the expert.
    weight = float(cfg.get("oe_weight", 0.5))

    def oe_loss(outputs, labels, epoch):
        del epoch
        return losses.outlier_exposure_loss(outputs.logits[0][:, :size], labels,
                                            in_expert_mask=mask, weight=weight)

    def oe_aggregate(outputs, params=None):
        del params
        logits = outputs.logits[0]
        return logits.at[:, size].set(fusion.LOG_ZERO)  # The unused output never wins.

    fields.update(loss=oe_loss, aggregate=oe_aggregate)
    return fields


# --------------------------------------------------------------------------------------------
# Fusion.
# --------------------------------------------------------------------------------------------


def fit_fusions(expert_logits, masks, labels, *, reject: bool, open_ratios, cfg) -> dict:
    """Parameters of the fitted fusions (stacking; joint calibration with a reject class)."""
    params = {"stacking": fusion.fit_stacking(
        expert_logits, masks, labels, reject=reject, open_ratios=open_ratios,
        num_steps=int(cfg.get("stacking_steps", 500)),
        learning_rate=float(cfg.get("stacking_lr", 0.05)),
        weight_decay=float(cfg.get("stacking_weight_decay", 1e-4)))}
    if reject:
        params["joint_calibration"] = fusion.fit_joint_calibration(
            expert_logits, masks, labels, open_ratios=open_ratios,
            num_epochs=int(cfg.get("calibration_epochs", 60)),
            batch_size=int(cfg.get("calibration_batch_size", 256)),
            learning_rate=float(cfg.get("calibration_lr", 0.1)),
            momentum=float(cfg.get("calibration_momentum", 0.9)),
            weight_decay=float(cfg.get("calibration_weight_decay", 5e-4)),
            lr_step_epochs=int(cfg.get("calibration_lr_step_epochs", 30)),
            seed=int(cfg.get("fusion_seed", 0)))
    return params


def apply_fusions(params: dict, expert_logits, masks, labels, *, reject: bool, open_ratios,
                  cfg) -> dict[str, np.ndarray]:
    """{fusion name: [N, C] log-probabilities (stacking: logits)}, plus 'oracle'."""
    common = dict(reject=reject, open_ratios=open_ratios)
    out = {
        "soft_voting": fusion.soft_voting(expert_logits, masks, **common),
        "expert_selection": fusion.expert_selection(expert_logits, masks, **common),
        "stacking": fusion.apply_stacking(params["stacking"], expert_logits, masks, **common),
        "oracle": fusion.oracle(expert_logits, masks, labels, **common),
    }
    if reject:
        out["kl_fusion"] = fusion.kl_fusion(
            expert_logits, masks, open_ratios=open_ratios,
            num_iterations=int(cfg.get("kl_iterations", 200)))
        out["joint_calibration"] = fusion.apply_joint_calibration(
            params["joint_calibration"], expert_logits, masks, open_ratios=open_ratios)
    order = [name for name in FUSIONS + ("oracle",) if name in out]
    return {name: np.asarray(out[name], np.float32) for name in order}


def _cross_fit(expert_logits, masks, labels, *, reject, open_ratios, cfg, seed):
    """Fusions of a split without a separate fitting split: 2 folds, each predicted by the fusions
    fitted on the other."""
    num = labels.shape[0]
    order = np.random.default_rng(seed).permutation(num)
    folds = [np.sort(order[:num // 2]), np.sort(order[num // 2:])]
    result = None
    for fold, other in ((folds[0], folds[1]), (folds[1], folds[0])):
        params = fit_fusions([z[other] for z in expert_logits], masks, labels[other],
                             reject=reject, open_ratios=open_ratios, cfg=cfg)
        part = apply_fusions(params, [z[fold] for z in expert_logits], masks, labels[fold],
                             reject=reject, open_ratios=open_ratios, cfg=cfg)
        if result is None:
            result = {k: np.zeros((num,) + v.shape[1:], np.float32) for k, v in part.items()}
        for key, value in part.items():
            result[key][fold] = value
    return result


def fusion_reports(expert_test, test_labels, masks, class_counts, *, reject: bool, open_ratios,
                   cfg, expert_val=None, val_labels=None, shot_convention: str = "cbe",
                   num_bins: int = 15) -> tuple[dict[str, dict[str, dict[str, float]]], str]:
    """Metric reports of every fusion and the oracle: ({'test': {name: report}, 'val': ...},
    fit_split).

    Args:
      expert_test: list of E arrays [N, K_k + 1] (reject last; [N, K_k] with reject=False), the
        experts' local logits on the test split; test_labels int [N] global.
      masks: bool [E, C], the experts' classes.
      class_counts: int [C] global training counts (shot groups).
      reject, open_ratios: as `ltx.fusion.class_balanced` (r per expert).
      cfg: `config.method` (fusion hyper-parameters).
      expert_val, val_labels: the same on the val split, where stacking and joint calibration
        are fitted (and reported as 'val'); None: 2-fold cross-fitting on the test split.
    """
    masks = np.asarray(masks, bool)
    common = dict(reject=reject, open_ratios=open_ratios, cfg=cfg)
    splits_out: dict[str, dict[str, np.ndarray]] = {}
    labels_of = {"test": np.asarray(test_labels)}
    logits_of = {"test": expert_test}
    if expert_val is not None:
        params = fit_fusions(expert_val, masks, np.asarray(val_labels), **common)
        splits_out["val"] = apply_fusions(params, expert_val, masks, np.asarray(val_labels),
                                          **common)
        splits_out["test"] = apply_fusions(params, expert_test, masks, labels_of["test"],
                                           **common)
        labels_of["val"], logits_of["val"] = np.asarray(val_labels), expert_val
        fit_split = "val"
    else:
        splits_out["test"] = _cross_fit(expert_test, masks, labels_of["test"],
                                        seed=int(cfg.get("fusion_seed", 0)), **common)
        fit_split = "test (2-fold cross-fitting)"
    reports: dict[str, dict[str, dict[str, float]]] = {}
    for split, outputs in splits_out.items():
        dists = np.asarray(fusion.expert_distributions(
            logits_of[split], masks, reject=reject, open_ratios=open_ratios))
        per_expert = np.log(np.maximum(dists, np.finfo(np.float32).tiny))
        reports[split] = {
            name: evaluation.metric_report(per_expert, log_probs, labels_of[split],
                                           class_counts, shot_convention=shot_convention,
                                           num_bins=num_bins)
            for name, log_probs in outputs.items()}
    return reports, fit_split


def format_fusion_table(reports: dict[str, dict[str, float]]) -> str:
    """A fixed-width table: one row per fusion, top-1 all/many/medium/few, NLL and ECE."""
    header = f"{'fusion':<18}" + "".join(f"{c:>12}" for c in REPORT_COLUMNS)
    lines = [header, "-" * len(header)]
    for name, report in reports.items():
        # Expert selection and the oracle give other experts' classes probability 0, so a wrong
        # selection costs an NLL of ~1e9: printed in exponent form.
        lines.append(f"{name:<18}" + "".join(
            f"{report[c]:>12.2f}" if abs(report[c]) < 1e6 else f"{report[c]:>12.3g}"
            for c in REPORT_COLUMNS))
    return "\n".join(lines)


def _state(run):
    if getattr(run, "state", None) is None:
        run.restore()
    return run.state


def _local_logits(run, split) -> np.ndarray:
    """The expert's logits [N, K + 1] on a (global) split; OE experts: the first K columns."""
    dataset = run.dataset
    outputs, _ = run.predict(_state(run), split)
    logits = np.asarray(outputs.logits[0], np.float32)
    return logits if dataset.reject else logits[:, :len(dataset.expert_classes)]


def fuse_stages(config, workdir: str, runs: dict) -> dict[str, Any]:
    """`config.finish = 'cbe_fusion'`: fuses the trained experts, writes `fusion.json`.

    Every expert (`config.method.experts`, stage names) predicts the baseline run's val and test
    splits (global labels); `fusion_reports` fuses them. `<workdir>/fusion.json` holds, per split,
    a table per fusion (top-1 all/many/medium/few, NLL, ECE) plus the baseline; the returned
    final metrics are the test report of `config.method.fusion` with `val_*` keys,
    `top1_all_<name>` for every fusion, the oracle and the baseline, and the run keys.
    """
    cfg = config.method
    names = tuple(cfg.get("experts", EXPERTS))
    missing = [n for n in ("baseline",) + names if n not in runs]
    if missing:
        raise ValueError(f"cbe_fusion needs the stages {('baseline',) + names}; missing "
                         f"{missing} (config.stage_order={tuple(config.stage_order)})")
    base = runs["baseline"]
    dataset = base.dataset
    if isinstance(dataset, class_subsets.ExpertDataset):
        raise ValueError("the 'baseline' stage must train on all classes; its config selects "
                         f"expert classes {dataset.expert_classes}")
    experts = [runs[n].dataset for n in names]
    for n, d in zip(names, experts):
        if not isinstance(d, class_subsets.ExpertDataset):
            raise ValueError(f"stage {n!r} is not a class-balanced expert: its config sets "
                             "neither data.expert_classes nor data.expert_group")
        method_reject = bool(runs[n].config.method.get("reject", True))
        if method_reject != d.reject:
            raise ValueError(f"stage {n!r} has method.reject={method_reject} but data.reject="
                             f"{d.reject}; expected both True (reject class) or both False "
                             "(outlier exposure)")
    kinds = {bool(getattr(d, "reject", True)) for d in experts}
    if len(kinds) != 1:
        raise ValueError(f"experts {names} mix reject-class and outlier-exposure training; "
                         "expected one kind (config.stages.<name>.data.reject)")
    reject = kinds.pop()
    default = cfg.get("fusion", "joint_calibration")
    if not reject and default in REJECT_ONLY_FUSIONS:
        raise ValueError(f"method.fusion={default!r} needs experts with a reject class, but they "
                         "use outlier exposure (data.reject=False); choose one of "
                         f"{[f for f in FUSIONS if f not in REJECT_ONLY_FUSIONS]}")
    masks = np.stack([d.expert_mask for d in experts])
    ratios = [d.fusion_open_ratio for d in experts]
    convention = config.eval.shot_convention
    num_bins = config.eval.num_bins
    counts = np.asarray(dataset.class_counts)

    expert_test = [_local_logits(runs[n], dataset.test) for n in names]
    expert_val = None
    if dataset.val is not None:
        expert_val = [_local_logits(runs[n], dataset.val) for n in names]
    reports, fit_split = fusion_reports(
        expert_test, np.asarray(dataset.test.labels), masks, counts, reject=reject,
        open_ratios=ratios, cfg=cfg, expert_val=expert_val,
        val_labels=None if dataset.val is None else np.asarray(dataset.val.labels),
        shot_convention=convention, num_bins=num_bins)
    state = _state(base)
    for split in reports:
        outputs, labels = base.predict(state, split)
        reports[split] = {"baseline": evaluation.metric_report(
            outputs.logits, outputs.logits[0], labels, counts, shot_convention=convention,
            num_bins=num_bins), **reports[split]}

    tables = {split: {name: {k: r[k] for k in REPORT_COLUMNS + ("top1_samples", "mce", "brier")}
                      for name, r in rows.items()} for split, rows in reports.items()}
    result = {"fusion": default, "fit_split": fit_split, "experts": list(names),
              "expert_classes": {n: list(d.expert_classes) for n, d in zip(names, experts)},
              "open_ratios": dict(zip(names, ratios)), "reject": reject, **tables}
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "fusion.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nClass-balanced experts, test split (stacking and joint calibration fitted on "
              f"{fit_split}):\n{format_fusion_table(reports['test'])}", flush=True)

    final = dict(reports["test"][default])
    final.update({f"val_{k}": v for k, v in reports.get("val", {}).get(default, {}).items()})
    for name, report in reports["test"].items():
        final[f"top1_all_{name}"] = report["top1_all"]
    final.update({
        "seed": config.seed, "dataset": dataset.name, "method": cfg.name, "fusion": default,
        "fit_split": fit_split, "num_experts": len(names), "shot_convention": convention,
        "epochs": config.num_epochs,
        "steps": sum(int(_state(runs[n]).step) for n in ("baseline",) + names)})
    return final
