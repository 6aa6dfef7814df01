"""Everything a long-tail paper reports, from a finished training workdir, in one command.

    ltx-eval --workdir=runs/digits_lt_balpoe [--shot_convention=ace] [--step=N]
    python -m ltx.cli eval --workdir=...                    # the same, without the scripts

The method's final predictor is rebuilt from the workdir (`ltx.workdirs.final_predictor`: the
run, the last stage of a multi-stage run, or the fused class-balanced experts) with its latest
(or `--step`) checkpoint, the test split is predicted once, and everything else is computed from
those expert logits:

- the uniform test set: top-1 over all classes and the many/medium/few groups (mean of per-class
  accuracies; the shot convention is selectable, default the run's `config.eval.shot_convention`),
  NLL, ECE, MCE (15 bins), Brier, for the ensemble and each expert;
- the test-agnostic protocol (SADE/BalPoE, docs/shared.md): forward and backward long-tailed test
  sets cut from the test split with at most `max_per_class` images per class (100 for CIFAR; the
  smallest per-class test count when lower, 30 for digits-LT), imbalance factors 2, 5, 10, 25, 50,
  the same seed-0 selection as the training subset (`long_tail_indices`). Forward-r keeps the
  head classes whole; backward-r is the reversed profile. Each is evaluated as predicted and with
  BalPoE's oracle correction for the subset's empirical class frequencies q (the method's
  `correct_prior`: log q added to the ensemble logits, minus mean(lambda) log pi when the lambdas
  are not balanced). On these imbalanced sets the headline accuracy is the sample accuracy
  (`top1_samples`), as in the references' tables.

It writes `<workdir>/eval/report.json` (all numbers; NaN, e.g. a shot group with no class in a
subset, becomes null), `<workdir>/eval/report.md` (Markdown tables) and the pictures of
`ltx.plots`. A method's evaluators (`Method.evaluators`, e.g. RIDE's experts per image and GFLOPs)
add a 'method' section, a predictor's `extra_reports` more (the class-balanced experts' every
fusion); a method without a test-prior correction gets the plain numbers only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltx import evaluation, files, metrics, plots, workdirs
from ltx.data import datasets, long_tail, shots
from ltx.methods.sade import test_time as test_time_lib

IMBALANCE_FACTORS = (2, 5, 10, 25, 50)
MAX_PER_CLASS = 100  # CIFAR's img_max in the references' test_all_cifar.py.
_TABLE_COLUMNS = ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece", "mce",
                  "brier")


def shifted_test_sets(labels: np.ndarray, num_classes: int, *,
                       max_per_class: int = MAX_PER_CLASS,
                       factors: Sequence[int] = IMBALANCE_FACTORS,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Indices into the test split of each test distribution, forward-50 ... uniform ... backward-50.

    'uniform' is the whole test split. The others hold `long_tail_counts(m, C, factor,
    reverse=...)` images per class with m = min(max_per_class, smallest per-class test count);
    when a class has no test image there are none (only 'uniform').
    """
    labels = np.asarray(labels)
    per_class = np.bincount(labels, minlength=num_classes)
    head = int(min(max_per_class, per_class.min()))
    if head < 1:  # A class without test images: no long-tailed profile can be cut.
        return {"uniform": np.arange(labels.shape[0])}
    result = {}
    for factor in sorted(factors, reverse=True):
        counts = long_tail.long_tail_counts(head, num_classes, factor)
        result[f"forward-{factor:g}"] = long_tail.long_tail_indices(labels, counts, seed=seed)
    result["uniform"] = np.arange(labels.shape[0])
    for factor in sorted(factors):
        counts = long_tail.long_tail_counts(head, num_classes, factor, reverse=True)
        result[f"backward-{factor:g}"] = long_tail.long_tail_indices(labels, counts, seed=seed)
    return result


# The test-agnostic list files shipped with SADE/BalPoE (docs/shared.md).
# A custom dataset ('list_files') may bring its own: test_forward50.txt, test_uniform.txt, ...
_SHIFTED_LIST_PREFIX = {"imagenet_lt": "ImageNet_LT", "inaturalist2018": "iNaturalist18",
                        "places_lt": "Places_LT", "list_files": "test"}
_SHIFTED_LIST = re.compile(r"^(?P<prefix>.+)_(?P<kind>forward|backward)(?P<factor>\d+)\.txt$")


def shifted_test_lists(data_config) -> dict[str, str]:
    """{'forward-50': path, ..., 'uniform': path, ...} of the shipped test-agnostic lists.

    For ImageNet-LT, iNaturalist 2018 and Places-LT the references evaluate on list files
    (`ImageNet_LT_forward50.txt`, `iNaturalist18_backward3.txt`, `..._uniform.txt`) found in
    `data.list_dir` (or `data.root`); a custom 'list_files' dataset's are `test_forward50.txt`,
    `test_uniform.txt`, `test_backward50.txt`, .... Other datasets, or a folder without them, give
    {} (and the report cuts the shifted sets from the test split, `shifted_test_sets`).
    """
    prefix = _SHIFTED_LIST_PREFIX.get(data_config.name)
    folder = data_config.get("list_dir", "") or data_config.get("root", "")
    if prefix is None or not folder or not files.isdir(folder):
        return {}
    found = {}
    for name in files.listdir(folder):
        match = _SHIFTED_LIST.match(name)
        if match and match["prefix"] == prefix:
            found[(match["kind"], int(match["factor"]))] = files.join(folder, name)
    result = {f"forward-{f}": found[("forward", f)]
              for f in sorted((f for k, f in found if k == "forward"), reverse=True)}
    if files.isfile(files.join(folder, f"{prefix}_uniform.txt")):
        result["uniform"] = files.join(folder, f"{prefix}_uniform.txt")
    result.update({f"backward-{f}": found[("backward", f)]
                   for f in sorted(f for k, f in found if k == "backward")})
    return result


def corrected_logits(logits: np.ndarray, labels: np.ndarray, num_classes: int,
                     correct_prior) -> np.ndarray:
    """Ensemble logits for the labels' empirical class frequencies (the oracle prior).

    `correct_prior(logits, prior)` is the method's correction (`Method.correct_prior`).
    """
    prior = np.bincount(labels, minlength=num_classes) / len(labels)
    return np.asarray(correct_prior(jnp.asarray(logits), prior))


def _reports(expert_logits, logits, labels, class_counts, convention, num_bins):
    """Ensemble report (with per-expert top-1) and one full report per expert."""
    ensemble = evaluation.metric_report(expert_logits, logits, labels, class_counts,
                                        shot_convention=convention, num_bins=num_bins)
    experts = [evaluation.metric_report(expert_logits[k:k + 1], expert_logits[k], labels,
                                        class_counts, shot_convention=convention,
                                        num_bins=num_bins)
               for k in range(expert_logits.shape[0])]
    for report in experts:
        report.pop("top1_expert0")
    return ensemble, experts


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def evaluate_workdir(workdir: str, *, shot_convention: str | None = None,
                     step: int | None = None, max_per_class: int = MAX_PER_CLASS,
                     factors: Sequence[int] = IMBALANCE_FACTORS, num_bins: int | None = None,
                     pictures: bool = True, verbose: bool = False,
                     predictor=None, run=None, test_time: bool = False,
                     test_time_seed: int = 0,
                     test_time_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluates the final predictor of `workdir` and writes `<workdir>/eval/`; returns the report.

    Args:
      workdir: a finished training workdir (config.json and checkpoints/, or stage directories).
      shot_convention: 'ride', 'ace', 'cbe' or 'lfme' (`ltx.data.shots`); default: the run's.
      step: checkpoint step (of the last stage); default the latest.
      max_per_class: head size of the long-tailed test sets (capped by the test split).
      factors: imbalance factors of the forward and backward test sets.
      num_bins: calibration bins; default the run's `config.eval.num_bins`.
      pictures: also draw the PNGs.
      verbose: print the Markdown report.
      predictor: the workdir's predictor (`ltx.workdirs.final_predictor`); default: restored.
      run: a `trainer.Run` with the state to evaluate in `run.state` (e.g. right after
        `run.train()`), which saves rebuilding and recompiling it.
      test_time: also learn SADE's test-time aggregation weights on every test distribution
        (`ltx.methods.sade.test_time`, the official settings for the dataset) and report the
        accuracy with them beside the plain mean of the experts.
      test_time_seed: seeds the views and batch orders of the test-time aggregation.
      test_time_overrides: fields of `ltx.methods.sade.test_time.Settings` to change from the
        official ones (e.g. {'epochs': 50} for test sets much smaller than CIFAR's).

    Returns:
      The dict written to report.json: 'meta', 'uniform' {'ensemble', 'experts'},
      'distributions' {name: {'num_images', 'class_counts', 'plain', 'corrected'}},
      'per_class', for gLA expert methods 'expert_priors', 'method' for a method's evaluators,
      with `test_time` 'test_time' {'settings', 'distributions': {name: {'weights', 'epochs',
      'losses', 'report'}}}, and the predictor's extra sections.
    """
    if shot_convention is not None and shot_convention not in shots.SHOT_CONVENTIONS:
        raise ValueError(f"unknown shot convention {shot_convention!r}; expected one of "
                         f"{sorted(shots.SHOT_CONVENTIONS)}")
    if predictor is None:
        predictor = (workdirs.RunPredictor(run) if run is not None
                     else workdirs.final_predictor(workdir, step))
    cfg, dataset, method = predictor.config, predictor.dataset, predictor.method
    if test_time:
        test_time_lib.check_applies(method, method.num_experts)
    convention = shot_convention or cfg.eval.shot_convention
    num_bins = num_bins or cfg.eval.num_bins
    num_classes = dataset.num_classes
    class_counts = dataset.class_counts
    outputs, logits, labels = predictor.predict("test")
    expert_logits = np.asarray(outputs.logits)

    ensemble, experts = _reports(expert_logits, logits, labels, class_counts, convention,
                                 num_bins)
    groups = shots.shot_groups(class_counts, convention)
    lambdas = list(method.expert_lambdas or ())
    correct = method.correct_prior
    report: dict[str, Any] = {
        "meta": {
            "workdir": files.absolute(workdir), "step": int(predictor.step),
            "dataset": dataset.name, "method": method.name,
            "num_experts": int(expert_logits.shape[0]), "lambdas": lambdas,
            "seed": cfg.seed, "shot_convention": convention,
            "shot_rule": shots.SHOT_CONVENTIONS[convention].description,
            "shot_groups": {name: np.flatnonzero(groups == i).tolist()
                            for i, name in enumerate(shots.GROUP_NAMES)},
            "train_class_counts": class_counts.tolist(), "num_bins": num_bins,
            "test_images": int(labels.shape[0]), "prior_correction": correct is not None,
        },
        "uniform": {"ensemble": ensemble, "experts": experts},
    }

    lists = shifted_test_lists(cfg.data)
    if lists:  # The shipped lists of ImageNet-LT / iNaturalist: other images than the test set.
        def shifted():
            for name, path in lists.items():
                split = datasets.load_list_split(cfg.data, path, num_classes)
                sub_outputs, sub_logits, sub_labels = predictor.predict(split)
                yield name, np.asarray(sub_outputs.logits), sub_logits, sub_labels, split
    else:  # Cut from the test split, as test_all_cifar.py does.
        def shifted():
            test = dataset.test
            for name, idx in shifted_test_sets(labels, num_classes, max_per_class=max_per_class,
                                               factors=factors).items():
                split = dataclasses.replace(test, indices=test.indices[idx],
                                            labels=test.labels[idx])
                yield name, expert_logits[:, idx], logits[idx], labels[idx], split
    distributions, test_time_results = {}, {}
    settings = (test_time_lib.official_settings(cfg.data, **(test_time_overrides or {}))
                if test_time else None)
    for position, (name, sub_experts, sub_logits, sub_labels, split) in enumerate(shifted()):
        if test_time:
            learned = test_time_lib.learn_weights(
                lambda inputs: predictor.predict_images(inputs)[0],
                test_time_lib.split_images(split), num_experts=int(sub_experts.shape[0]),
                mean=dataset.mean, std=dataset.std, settings=settings,
                seed=(test_time_seed, position))
            weighted = np.tensordot(learned.weights, sub_experts, axes=1)  # [N, C]
            test_time_results[name] = {
                "weights": learned.weights.tolist(), "epochs": learned.epochs,
                "losses": list(learned.losses),
                "report": evaluation.metric_report(sub_experts, weighted, sub_labels,
                                                   class_counts, shot_convention=convention,
                                                   num_bins=num_bins)}
        plain = evaluation.metric_report(sub_experts, sub_logits, sub_labels, class_counts,
                                         shot_convention=convention, num_bins=num_bins)
        corrected = None
        if correct is not None:
            corrected = evaluation.metric_report(
                sub_experts, corrected_logits(sub_logits, sub_labels, num_classes, correct),
                sub_labels, class_counts, shot_convention=convention, num_bins=num_bins)
        distributions[name] = {
            "num_images": int(sub_labels.shape[0]),
            "expert_top1_samples": [100.0 * float(np.mean(e.argmax(-1) == sub_labels))
                                    for e in sub_experts],
            "class_counts": np.bincount(sub_labels, minlength=num_classes).tolist(),
            "plain": plain, "corrected": corrected}
    report["distributions"] = distributions
    if test_time:
        report["test_time"] = {"settings": dataclasses.asdict(settings), "seed": test_time_seed,
                               "distributions": test_time_results}
    report["meta"]["shifted_test_lists"] = (files.dirname(next(iter(lists.values())))
                                            if lists else None)
    report["meta"]["test_distribution_head"] = int(min(
        max_per_class, np.bincount(labels, minlength=num_classes).min()))

    per_class = {"ensemble": metrics.per_class_accuracy(logits.argmax(-1), labels, num_classes)}
    for k in range(expert_logits.shape[0]):
        per_class[_expert_name(k, lambdas)] = metrics.per_class_accuracy(
            expert_logits[k].argmax(-1), labels, num_classes)
    report["per_class"] = {k: np.asarray(v) for k, v in per_class.items()}
    if len(lambdas) == expert_logits.shape[0] > 1:
        report["expert_priors"] = implied_priors(expert_logits, dataset.train_prior, lambdas)
    if method.evaluators:
        report["method"] = method.evaluate(outputs, labels, dataset, cfg)
    report.update(predictor.extra_reports())

    out_dir = files.join(workdir, "eval")
    files.makedirs(out_dir)
    report = _json_safe(report)
    files.write_json(files.join(out_dir, "report.json"), report, sort_keys=False)
    markdown = format_markdown(report)
    files.write_text(files.join(out_dir, "report.md"), markdown)
    if pictures:
        report["pictures"] = draw_pictures(out_dir, report, expert_logits, logits, labels)
    if verbose:
        print(markdown)
    return report


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


def _expert_name(k: int, lambdas: Sequence[float]) -> str:
    return f"expert {k} (lambda {lambdas[k]:g})" if k < len(lambdas) else f"expert {k}"


def draw_pictures(out_dir: str, report: dict, expert_logits: np.ndarray, logits: np.ndarray,
                  labels: np.ndarray) -> list[str]:
    """Writes the PNGs of an evaluation into `out_dir`; returns their paths."""
    meta = report["meta"]
    lambdas, num_experts = meta["lambdas"], expert_logits.shape[0]
    paths = []

    def target(name):
        paths.append(files.join(out_dir, name))
        return paths[-1]

    panels = {"ensemble": logits}
    if num_experts > 1:
        panels.update({_expert_name(k, lambdas): expert_logits[k] for k in range(num_experts)})
    plots.reliability_diagrams(target("reliability.png"), panels, labels,
                               num_bins=meta["num_bins"])
    rule = shots.SHOT_CONVENTIONS[meta["shot_convention"]]
    per_class = {k: np.asarray(v, np.float64) for k, v in report["per_class"].items()}
    if num_experts == 1:
        per_class = {"ensemble": per_class["ensemble"]}
    plots.per_class_accuracy(target("per_class_accuracy.png"),
                             np.asarray(meta["train_class_counts"]), per_class,
                             many_threshold=rule.many_threshold,
                             few_threshold=rule.few_threshold)
    names = list(report["distributions"])
    dists = report["distributions"]
    experts = None
    if num_experts > 1:
        experts = {_expert_name(k, lambdas): [dists[n]["expert_top1_samples"][k] for n in names]
                   for k in range(num_experts)}
    plots.test_distribution_accuracy(
        target("test_distributions.png"), names,
        [dists[n]["plain"]["top1_samples"] for n in names],
        None if not meta["prior_correction"]
        else [dists[n]["corrected"]["top1_samples"] for n in names], experts)
    if "expert_priors" in report:
        counts = np.asarray(meta["train_class_counts"], np.float64)
        plots.expert_priors(target("expert_priors.png"), counts / counts.sum(), lambdas,
                            np.asarray(report["expert_priors"]["estimated"]))
    return paths


def _cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(name: str, report: dict) -> str:
    cells = [_cell(report[c], 3 if c in ("nll", "brier") else 2) for c in _TABLE_COLUMNS]
    return f"| {name} | " + " | ".join(cells) + " |"


def format_markdown(report: dict) -> str:
    """The Markdown tables of a report (as returned by `evaluate_workdir`)."""
    meta = report["meta"]
    lambdas = meta["lambdas"]
    groups = ", ".join(f"{name} = classes {ids}" for name, ids in meta["shot_groups"].items())
    lines = [
        f"# Evaluation of `{meta['workdir']}`", "",
        f"{meta['method']} with {meta['num_experts']} expert(s)"
        + (f" (lambdas {', '.join(f'{x:g}' for x in lambdas)})" if lambdas else "")
        + f" on {meta['dataset']}, seed {meta['seed']}, checkpoint step {meta['step']}.",
        f"Shot convention `{meta['shot_convention']}` ({meta['shot_rule']}, training counts): "
        f"{groups}. Accuracies, ECE and MCE in percent ({meta['num_bins']} bins); NLL and "
        "Brier per image.", "",
        f"## Uniform test set ({meta['test_images']} images)", "",
        "| model | top-1 all | many | medium | few | NLL | ECE | MCE | Brier |",
        "|---|---|---|---|---|---|---|---|---|",
        _row("**ensemble**", report["uniform"]["ensemble"]),
    ]
    if meta["num_experts"] > 1:
        lines += [_row(_expert_name(k, lambdas), r)
                  for k, r in enumerate(report["uniform"]["experts"])]
    expert_columns = "".join(f" expert {k} |" for k in range(meta["num_experts"])) \
        if meta["num_experts"] > 1 else ""
    lines += [
        "", "## Test-agnostic protocol", "",
        (f"The shipped test-agnostic list files ({meta['shifted_test_lists']}); "
         if meta.get("shifted_test_lists") else
         f"Long-tailed test sets cut from the test split (head class "
         f"{meta['test_distribution_head']} images, seed 0); ") + "forward-r is head-heavy with "
        "imbalance factor r, backward-r tail-heavy. Top-1 is the sample accuracy on that set; "
        "'+ prior' adds the log of the set's class frequencies to the ensemble logits.", "",
        "| test distribution | images | top-1 | top-1 + prior | NLL | NLL + prior | ECE "
        "| ECE + prior |" + expert_columns,
        "|---|---|---|---|---|---|---|---|" + "---|" * (expert_columns.count("|")),
    ]
    for name, d in report["distributions"].items():
        plain = d["plain"]
        corrected = d["corrected"] or {k: None for k in plain}
        cells = [str(d["num_images"]), _cell(plain["top1_samples"]),
                 _cell(corrected["top1_samples"]), _cell(plain["nll"], 3),
                 _cell(corrected["nll"], 3), _cell(plain["ece"]), _cell(corrected["ece"])]
        if meta["num_experts"] > 1:
            cells += [_cell(x) for x in d["expert_top1_samples"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if not meta["prior_correction"]:
        lines += ["", f"{meta['method']} has no test-prior correction: '+ prior' columns are '-'."]
    if "test_time" in report:
        tta = report["test_time"]
        lines += ["", "## Test-time self-supervised aggregation (SADE)", "",
                  f"Expert weights learned on each test distribution's unlabelled images "
                  f"(learning rate {tta['settings']['learning_rate']:g}, at most "
                  f"{tta['settings']['epochs']} epochs, seed {tta['seed']}); top-1 with them "
                  "beside the plain mean of the experts.", "",
                  "| test distribution | weights | epochs | top-1 mean | top-1 learned | many "
                  "| medium | few |", "|---|---|---|---|---|---|---|---|"]
        for name, d in tta["distributions"].items():
            learned = d["report"]
            weights = ", ".join(f"{w:.3f}" for w in d["weights"])
            cells = [weights, str(d["epochs"]),
                     _cell(report["distributions"][name]["plain"]["top1_samples"]),
                     _cell(learned["top1_samples"]), _cell(learned["top1_many"]),
                     _cell(learned["top1_medium"]), _cell(learned["top1_few"])]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "method" in report:
        lines += ["", f"## {meta['method']}: the method's own numbers", "",
                  "| quantity | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report["method"].items()]
    if "fusions" in report:
        lines += ["", f"## Every fusion (the prediction is `{report['fusion']}`; stacking and "
                  f"joint calibration fitted on {report['fit_split']})"]
        for split, rows in report["fusions"].items():
            lines += ["", f"### {split}", "",
                      "| fusion | top-1 all | many | medium | few | NLL | ECE | MCE | Brier |",
                      "|---|---|---|---|---|---|---|---|---|"]
            lines += [_row(name, r) for name, r in rows.items()]
    return "\n".join(lines) + "\n"
