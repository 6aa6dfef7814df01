"""The class-balanced experts' last step: fuse the trained experts (`fuse_stages`, the
`cbe_fusion` finish step), predict with the fused model (`FusedPredictor`, what `ltx-eval` and
`ltx-predict` use on a finished workdir) and report every fusion (`FUSION_TABLES`, the 'fusions'
evaluator of `ltx-eval`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ltx import evaluation, evaluators, files
from ltx.methods import base as base_method
from ltx.methods.cbe import data as expert_data
from ltx.methods.cbe import fusion
from ltx.methods.cbe.fusion import FUSIONS, REJECT_ONLY_FUSIONS
from ltx.outputs import Outputs

REPORT_COLUMNS = ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece")


def fit_fusions(expert_logits, masks, labels, *, reject: bool, open_ratios, cfg) -> dict:
    """Parameters of the fitted fusions (stacking; joint calibration with a reject class)."""
    params = {"stacking": fusion.fit_stacking(
        expert_logits, masks, labels, reject=reject, open_ratios=open_ratios,
        num_steps=int(cfg.stacking_steps),
        learning_rate=float(cfg.stacking_lr),
        weight_decay=float(cfg.stacking_weight_decay))}
    if reject:
        params["joint_calibration"] = fusion.fit_joint_calibration(
            expert_logits, masks, labels, open_ratios=open_ratios,
            num_epochs=int(cfg.calibration_epochs),
            batch_size=int(cfg.calibration_batch_size),
            learning_rate=float(cfg.calibration_lr),
            momentum=float(cfg.calibration_momentum),
            weight_decay=float(cfg.calibration_weight_decay),
            lr_step_epochs=int(cfg.calibration_lr_step_epochs),
            seed=int(cfg.fusion_seed))
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
            num_iterations=int(cfg.kl_iterations))
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
      reject, open_ratios: as `ltx.methods.cbe.fusion` (r per expert).
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
                                        seed=int(cfg.fusion_seed), **common)
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


def _local(logits, dataset) -> np.ndarray:
    """An expert's local logits [N, K + 1]; outlier-exposure experts: the first K columns."""
    logits = np.asarray(logits, np.float32)
    return logits if dataset.reject else logits[:, :len(dataset.expert_classes)]


def _local_logits(predictor, split) -> np.ndarray:
    """The expert's logits [N, K + 1] on a (global) split; OE experts: the first K columns."""
    outputs, _ = predictor.outputs(split)
    return _local(outputs.logits[0], predictor.dataset)


def _check_stages(config, runs: dict) -> dict[str, Any]:
    """The fusion's setup from the trained stages, checked: {'names', 'base', 'experts',
    'reject', 'fusion', 'masks', 'open_ratios'}."""
    cfg = config.method
    names = tuple(cfg.experts)
    missing = [n for n in ("baseline",) + names if n not in runs]
    if missing:
        raise ValueError(f"cbe_fusion needs the stages {('baseline',) + names}; missing "
                         f"{missing} (config.stage_order={tuple(config.stage_order)})")
    base = runs["baseline"]
    if isinstance(base.dataset, expert_data.ExpertDataset):
        raise ValueError("the 'baseline' stage must train on all classes; its config selects "
                         f"expert classes {base.dataset.expert_classes}")
    experts = [runs[n].dataset for n in names]
    for n, d in zip(names, experts):
        if not isinstance(d, expert_data.ExpertDataset):
            raise ValueError(f"stage {n!r} is not a class-balanced expert: its config sets "
                             "neither data.expert_classes nor data.expert_group")
        method_reject = bool(runs[n].config.method.reject)
        if method_reject != d.reject:
            raise ValueError(f"stage {n!r} has method.reject={method_reject} but data.reject="
                             f"{d.reject}; expected both True (reject class) or both False "
                             "(outlier exposure)")
    kinds = {bool(d.reject) for d in experts}
    if len(kinds) != 1:
        raise ValueError(f"experts {names} mix reject-class and outlier-exposure training; "
                         "expected one kind (config.stages.<name>.data.reject)")
    reject = kinds.pop()
    if not reject and cfg.fusion in REJECT_ONLY_FUSIONS:
        raise ValueError(f"method.fusion={cfg.fusion!r} needs experts with a reject class, but "
                         "they use outlier exposure (data.reject=False); choose one of "
                         f"{[f for f in FUSIONS if f not in REJECT_ONLY_FUSIONS]}")
    return {"names": names, "base": base, "experts": experts, "reject": reject,
            "fusion": cfg.fusion, "masks": np.stack([d.expert_mask for d in experts]),
            "open_ratios": [d.fusion_open_ratio for d in experts]}


def _all_reports(config, runs: dict, setup: dict) -> tuple[dict, str]:
    """Every fusion's, the oracle's and the baseline's reports per split, and the fit split."""
    cfg, names, base = config.method, setup["names"], setup["base"]
    dataset = base.dataset
    convention, num_bins = config.eval.shot_convention, config.eval.num_bins
    counts = np.asarray(dataset.class_counts)
    expert_test = [_local_logits(runs[n], dataset.test) for n in names]
    expert_val = None
    if dataset.val is not None:
        expert_val = [_local_logits(runs[n], dataset.val) for n in names]
    reports, fit_split = fusion_reports(
        expert_test, np.asarray(dataset.test.labels), setup["masks"], counts,
        reject=setup["reject"], open_ratios=setup["open_ratios"], cfg=cfg, expert_val=expert_val,
        val_labels=None if dataset.val is None else np.asarray(dataset.val.labels),
        shot_convention=convention, num_bins=num_bins)
    for split in reports:
        outputs, labels = base.outputs(split)
        reports[split] = {"baseline": evaluation.metric_report(
            outputs.logits, outputs.logits[0], labels, counts, shot_convention=convention,
            num_bins=num_bins), **reports[split]}
    return reports, fit_split


def _tables(reports: dict) -> dict:
    return {split: {name: {k: r[k] for k in REPORT_COLUMNS + ("top1_samples", "mce", "brier")}
                    for name, r in rows.items()} for split, rows in reports.items()}


def fuse_stages(config, workdir: str, runs: dict) -> dict[str, Any]:
    """`config.finish = 'cbe_fusion'`: fuses the trained experts, writes `fusion.json`.

    Every expert (`config.method.experts`, stage names) predicts the baseline run's val and test
    splits (global labels); `fusion_reports` fuses them. `<workdir>/fusion.json` holds, per split,
    a table per fusion (top-1 all/many/medium/few, NLL, ECE) plus the baseline; the returned
    final metrics are the test report of `config.method.fusion` with `val_*` keys,
    `top1_all_<name>` for every fusion, the oracle and the baseline, and the run keys.
    """
    setup = _check_stages(config, runs)
    names, default, dataset = setup["names"], setup["fusion"], setup["base"].dataset
    reports, fit_split = _all_reports(config, runs, setup)
    result = {"fusion": default, "fit_split": fit_split, "experts": list(names),
              "expert_classes": {n: list(d.expert_classes)
                                 for n, d in zip(names, setup["experts"])},
              "open_ratios": dict(zip(names, setup["open_ratios"])), "reject": setup["reject"],
              **_tables(reports)}
    if jax.process_index() == 0:
        files.makedirs(workdir)
        files.write_json(files.join(workdir, "fusion.json"), result, sort_keys=False)
        print(f"\nClass-balanced experts, test split (stacking and joint calibration fitted on "
              f"{fit_split}):\n{format_fusion_table(reports['test'])}", flush=True)

    final = dict(reports["test"][default])
    final.update({f"val_{k}": v for k, v in reports.get("val", {}).get(default, {}).items()})
    for name, report in reports["test"].items():
        final[f"top1_all_{name}"] = report["top1_all"]
    final.update({
        "seed": config.seed, "dataset": dataset.name, "method": config.method.name,
        "fusion": default, "fit_split": fit_split, "num_experts": len(names),
        "shot_convention": config.eval.shot_convention, "epochs": config.num_epochs,
        "steps": sum(runs[n].step for n in ("baseline",) + names)})
    return final


def not_trainable(outputs, labels, epoch):
    """The loss of the fused experts' `Method` (`FusedPredictor.method`): they are not trained
    as one model. The 'fusions' evaluator knows the fused experts by it."""
    raise ValueError("the fused class-balanced experts are not trained as one model; train "
                     "their stages")


class FusedPredictor:
    """The fused class-balanced experts of a finished workdir, with the
    `ltx.predictor.Predictor` interface (what `ltx-eval` and `ltx-predict` use).

    The prediction is `config.method.fusion`'s. Stacking and joint calibration are fitted on the
    val split as in the run, so the test numbers equal the run's; without a val split the test
    split is predicted with the run's 2-fold cross-fitting and other images with the fusion
    fitted on the whole test split. `predict` returns as expert logits the log of each expert's
    distribution over all C classes (`fusion.expert_distributions`); the fused output has no
    test-prior correction.
    """

    def __init__(self, config, runs: dict):
        self._setup = _check_stages(config, runs)
        self._runs = runs
        self._top_config = config
        base = self._setup["base"]
        self.config = base.config
        self.dataset = base.dataset
        names = self._setup["names"]
        self.method = base_method.Method(name=config.method.name, num_experts=len(names),
                                         loss=not_trainable)
        self.step = sum(runs[n].step for n in ("baseline",) + names)
        self.models = [(n, runs[n].model) for n in names]
        self._fitted = None

    def _common(self) -> dict:
        return dict(reject=self._setup["reject"], open_ratios=self._setup["open_ratios"],
                    cfg=self._top_config.method)

    def _params(self) -> dict:
        """The fitted fusions' parameters: on val, else on the whole test split."""
        if self._fitted is None:
            split = self.dataset.val if self.dataset.val is not None else self.dataset.test
            local = [_local_logits(self._runs[n], split) for n in self._setup["names"]]
            self._fitted = fit_fusions(local, self._setup["masks"], np.asarray(split.labels),
                                       **self._common())
        return self._fitted

    def _fuse(self, local, labels, *, cross_fit: bool) -> tuple:
        masks = self._setup["masks"]
        if cross_fit:
            fused = _cross_fit(local, masks, labels, seed=int(self._top_config.method.fusion_seed),
                               **self._common())
        else:
            fused = apply_fusions(self._params(), local, masks, labels, **self._common())
        dists = np.asarray(fusion.expert_distributions(
            local, masks, reject=self._setup["reject"], open_ratios=self._setup["open_ratios"]))
        expert_logits = np.log(np.maximum(dists, np.finfo(np.float32).tiny))
        return expert_logits, np.asarray(fused[self._setup["fusion"]], np.float32)

    def predict(self, split="test") -> tuple[Outputs, np.ndarray, np.ndarray]:
        """(Outputs with the experts' log-distributions [E, N, C], fused log-probabilities
        [N, C], labels [N]) on 'test', 'val' or a `Split` of the global classes."""
        is_test = split == "test"
        if isinstance(split, str):
            name, split = split, getattr(self.dataset, split)
            if split is None:
                raise ValueError(f"dataset {self.dataset.name} has no {name!r} split")
        labels = np.asarray(split.labels)
        local = [_local_logits(self._runs[n], split) for n in self._setup["names"]]
        expert_logits, fused = self._fuse(
            local, labels, cross_fit=is_test and self.dataset.val is None)
        return Outputs(expert_logits), fused, labels

    def predict_images(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(experts' log-distributions [E, N, C], fused log-probabilities [N, C]) of normalised
        inputs [N, H, W, C]."""
        local = []
        for n in self._setup["names"]:
            expert = self._runs[n]
            local.append(_local(expert.forward(inputs).logits[0], expert.dataset))
        labels = np.zeros(inputs.shape[0], np.int64)  # Only the oracle reads them.
        return self._fuse(local, labels, cross_fit=False)

    def correct_prior(self, logits, prior):
        raise ValueError("the fused class-balanced experts have no test-prior correction")

    def fusion_tables(self) -> dict[str, Any]:
        """{'fusions': {split: {fusion: metrics}}, 'fusion': the prediction's, 'fit_split'}:
        every fusion, the oracle and the baseline, as in `fusion.json`."""
        reports, fit_split = _all_reports(self._top_config, self._runs, self._setup)
        return {"fusions": _tables(reports), "fusion": self._setup["fusion"],
                "fit_split": fit_split}


# -- the 'fusions' evaluator ------------------------------------------------------------------

def _fusions_markdown(report: dict) -> list[str]:
    lines = [f"## Every fusion (the prediction is `{report['fusion']}`; stacking and joint "
             f"calibration fitted on {report['fit_split']})"]
    for split, rows in report["fusions"].items():
        lines += ["", f"### {split}", "",
                  "| fusion | top-1 all | many | medium | few | NLL | ECE | MCE | Brier |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [evaluators.row(name, r) for name, r in rows.items()]
    return lines


# config.evals.fusions (in every config by default): registered in `ltx.methods` as 'fusions';
# applies to the fused experts of a finished class-balanced-experts workdir, whose report then
# holds every fusion's, the oracle's and the baseline's metrics per split, as `fusion.json`.
FUSION_TABLES = evaluators.Evaluator(
    run=lambda context: context.predictor.fusion_tables(), markdown=_fusions_markdown,
    order=90,
    check=lambda method: None if method.loss is not_trainable else
    f"method {method.name!r} is not the fused class-balanced experts of a finished 'cbe' "
    "workdir")
