"""Evaluators: the parts of an evaluation report, each named in `config.evals` with its settings.

In big_vision's shape: an evaluation predicts the test split once and hands every evaluator named
in `config.evals` (in its order) a `Context`; each returns report sections (JSON-able after
`report._json_safe`), and may add Markdown lines and pictures of its own. `ltx-eval` runs the
configured ones plus any named on the command line (`--evals=name[,name]`).

    config.evals.uniform = {}                     # the uniform test set
    config.evals.shifted = {'max_per_class': 100, 'factors': (2, 5, 10, 25, 50)}
    config.evals.expert_priors = {}               # gLA experts' learned priors (ltx.methods.balpoe)
    config.evals.routing = {}                     # experts per image (ltx.methods.ride)
    config.evals.fusions = {}                     # every fusion (ltx.methods.cbe)

Built in here: 'uniform' and 'shifted'. A method home registers the evaluators only it knows
(`ltx.methods.evaluator` finds them by name: 'expert_priors' in `ltx.methods.balpoe`, 'routing'
in `ltx.methods.ride`, 'test_time_aggregation' in `ltx.methods.sade.test_time`, 'fusions' in
`ltx.methods.cbe`); user code adds its own with `ltx.methods.register_evaluator`. An evaluator's
`metrics` (numbers of one split) also run in training's periodic and final evaluations. An
evaluator named in a config that does not apply to the method (`Evaluator.check` gives the
reason) is skipped; one asked for on the command line fails with that reason.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import numpy as np

from ltx import evaluation, files, metrics, plots
from ltx.data import datasets, long_tail, shots, splits
from ltx.outputs import Outputs

IMBALANCE_FACTORS = (2, 5, 10, 25, 50)
MAX_PER_CLASS = 100  # CIFAR's img_max in the references' test_all_cifar.py.


@dataclasses.dataclass
class Context:
    """What every evaluator of one evaluation sees.

    Attributes:
      config, dataset, method: the evaluated run's (`ltx.methods.Method`).
      outputs: `Outputs` of the test split (host arrays; logits [E, N, C]).
      logits: float [N, C] the ensemble's test logits; labels: int [N].
      convention: the shot convention ('ride', ...); num_bins: calibration bins.
      predict: `fn(split) -> (Outputs, logits [n, C], labels [n])` of another split.
      predict_images: `fn(float [n, H, W, C] normalised) -> (expert logits [E, n, C], logits)`.
      report: the sections the evaluators before this one returned (and 'meta').
      settings: {evaluator name: its settings} of every evaluator of this evaluation.
      predictor: the evaluated predictor (`ltx.predictor.Predictor`'s interface), for an
        evaluator that needs more than predictions (the fused class-balanced experts' 'fusions'
        reads their stage models through it).
    """

    config: Any
    dataset: Any
    method: Any
    outputs: Outputs
    logits: np.ndarray
    labels: np.ndarray
    convention: str
    num_bins: int
    predict: Callable[[splits.Split], tuple[Outputs, np.ndarray, np.ndarray]]
    predict_images: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, dict] = dataclasses.field(default_factory=dict)
    predictor: Any = None

    @property
    def expert_logits(self) -> np.ndarray:
        """float [E, N, C] the experts' test logits."""
        return np.asarray(self.outputs.logits)

    def metric_report(self, expert_logits, logits, labels) -> dict[str, float]:
        """`evaluation.metric_report` with this evaluation's training counts, shots and bins."""
        return evaluation.metric_report(expert_logits, logits, labels,
                                        self.dataset.class_counts,
                                        shot_convention=self.convention,
                                        num_bins=self.num_bins)


Sections = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """One named part of a report.

    Attributes:
      run: `(context, **settings) -> sections` ({'distributions': ...}; a 'meta' section is
        merged into the report's meta).
      metrics: `(outputs, labels, dataset, config, **settings) -> {name: float}`, numbers of
        one split (host `Outputs` [E, N, C], labels [N]) that training also logs: merged into
        the periodic and final metrics (`ltx.predictor.Predictor.evaluate`); an evaluator with
        `metrics` and no `run` reports them on the test split as its section, under its name.
      check: `(method) -> reason or None`: why it does not apply to a run of this
        `ltx.methods.Method` (None: it does); asked before anything is predicted.
      validate: `(**settings) -> None`, raising ValueError for bad settings before any model is
        restored.
      markdown: `(report) -> [lines]` of its Markdown section.
      pictures: `(target, report, context) -> None`, drawing with `target(file name) -> path`.
      order: where its sections stand in the report (ascending; ties by name), since a
        ConfigDict lists its keys sorted by name.
    """

    run: Callable[..., Sections] | None = None
    metrics: Callable[..., dict[str, float]] | None = None
    check: Callable[[Any], str | None] | None = None
    validate: Callable[..., None] | None = None
    markdown: Callable[[dict], list[str]] | None = None
    pictures: Callable[[Callable[[str], str], dict, Context], None] | None = None
    order: int = 50

    def sections(self, name: str, context: Context, **settings) -> Sections:
        """The report sections of this evaluator (registered as `name`)."""
        if self.run is not None:
            return self.run(context, **settings)
        return {name: self.metrics(context.outputs, context.labels, context.dataset,
                                   context.config, **settings)}


def expert_name(k: int, lambdas: Sequence[float]) -> str:
    return f"expert {k} (lambda {lambdas[k]:g})" if k < len(lambdas) else f"expert {k}"


def cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_COLUMNS = ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece", "mce",
                 "brier")


def row(name: str, report: dict) -> str:
    """A Markdown table row of a metric report's `TABLE_COLUMNS`."""
    cells = [cell(report[c], 3 if c in ("nll", "brier") else 2) for c in TABLE_COLUMNS]
    return f"| {name} | " + " | ".join(cells) + " |"


# -- 'uniform' --------------------------------------------------------------------------------

def _uniform(ctx: Context) -> Sections:
    """The uniform test set: the ensemble's and each expert's full metric report, and per-class
    accuracies."""
    expert_logits, labels = ctx.expert_logits, ctx.labels
    ensemble = ctx.metric_report(expert_logits, ctx.logits, labels)
    experts = [ctx.metric_report(expert_logits[k:k + 1], expert_logits[k], labels)
               for k in range(expert_logits.shape[0])]
    for report in experts:
        report.pop("top1_expert0")
    num_classes, lambdas = ctx.dataset.num_classes, list(ctx.method.expert_lambdas or ())
    per_class = {"ensemble": metrics.per_class_accuracy(ctx.logits.argmax(-1), labels,
                                                         num_classes)}
    for k in range(expert_logits.shape[0]):
        per_class[expert_name(k, lambdas)] = metrics.per_class_accuracy(
            expert_logits[k].argmax(-1), labels, num_classes)
    return {"uniform": {"ensemble": ensemble, "experts": experts},
            "per_class": {k: np.asarray(v) for k, v in per_class.items()}}


def _uniform_markdown(report: dict) -> list[str]:
    meta = report["meta"]
    lines = [f"## Uniform test set ({meta['test_images']} images)", "",
             "| model | top-1 all | many | medium | few | NLL | ECE | MCE | Brier |",
             "|---|---|---|---|---|---|---|---|---|",
             row("**ensemble**", report["uniform"]["ensemble"])]
    if meta["num_experts"] > 1:
        lines += [row(expert_name(k, meta["lambdas"]), r)
                  for k, r in enumerate(report["uniform"]["experts"])]
    return lines


def _uniform_pictures(target, report: dict, ctx: Context) -> None:
    meta = report["meta"]
    lambdas, num_experts = meta["lambdas"], ctx.expert_logits.shape[0]
    panels = {"ensemble": ctx.logits}
    if num_experts > 1:
        panels.update({expert_name(k, lambdas): ctx.expert_logits[k]
                       for k in range(num_experts)})
    plots.reliability_diagrams(target("reliability.png"), panels, ctx.labels,
                               num_bins=meta["num_bins"])
    rule = shots.SHOT_CONVENTIONS[meta["shot_convention"]]
    per_class = {k: np.asarray(v, np.float64) for k, v in report["per_class"].items()}
    if num_experts == 1:
        per_class = {"ensemble": per_class["ensemble"]}
    plots.per_class_accuracy(target("per_class_accuracy.png"),
                             np.asarray(meta["train_class_counts"]), per_class,
                             many_threshold=rule.many_threshold,
                             few_threshold=rule.few_threshold)


# -- 'shifted' --------------------------------------------------------------------------------

def shifted_test_sets(labels: np.ndarray, num_classes: int, *,
                       max_per_class: int = MAX_PER_CLASS,
                       factors: Sequence[int] = IMBALANCE_FACTORS,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Indices into the test split of each test distribution, forward-50 ... backward-50.

    'uniform' is the whole test split. The others hold `long_tail_counts(m, C, factor,
    reverse=...)` images per class with m = min(max_per_class, smallest per-class test count);
    when a class has no test image there are none (only 'uniform').
    """
    per_class = np.bincount(labels, minlength=num_classes)
    head = int(min(max_per_class, per_class.min()))
    result = {}
    if head > 0:
        for factor in sorted(factors, reverse=True):
            counts = long_tail.long_tail_counts(head, num_classes, factor)
            result[f"forward-{factor}"] = long_tail.long_tail_indices(labels, counts, seed=seed)
    result["uniform"] = np.arange(len(labels))
    if head > 0:
        for factor in sorted(factors):
            counts = long_tail.long_tail_counts(head, num_classes, factor, reverse=True)
            result[f"backward-{factor}"] = long_tail.long_tail_indices(labels, counts, seed=seed)
    return result


# The references' shifted test lists for the list-file datasets: <prefix>_forward50.txt, ...
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
    {} (and the shifted sets are cut from the test split, `shifted_test_sets`).
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


def shifted_predictions(ctx: Context, max_per_class: int = MAX_PER_CLASS,
                        factors: Sequence[int] = IMBALANCE_FACTORS):
    """Yields (name, expert logits [E, n, C], logits [n, C], labels [n], split) of every test
    distribution: the shipped lists' (predicted), else the sets cut from the test split."""
    cfg, num_classes = ctx.config, ctx.dataset.num_classes
    lists = shifted_test_lists(cfg.data)
    if lists:  # The shipped lists of ImageNet-LT / iNaturalist: other images than the test set.
        for name, path in lists.items():
            split = datasets.load_list_split(cfg.data, path, num_classes)
            sub_outputs, sub_logits, sub_labels = ctx.predict(split)
            yield name, np.asarray(sub_outputs.logits), sub_logits, sub_labels, split
        return
    test, labels = ctx.dataset.test, ctx.labels  # Cut from the test split (test_all_cifar.py).
    for name, idx in shifted_test_sets(labels, num_classes, max_per_class=max_per_class,
                                       factors=factors).items():
        split = dataclasses.replace(test, indices=test.indices[idx], labels=test.labels[idx])
        yield name, ctx.expert_logits[:, idx], ctx.logits[idx], labels[idx], split


def corrected_logits(logits: np.ndarray, labels: np.ndarray, num_classes: int,
                     correct_prior) -> np.ndarray:
    """Ensemble logits for the labels' empirical class frequencies (the oracle prior).

    `correct_prior(logits, prior)` is the method's correction (`Method.correct_prior`).
    """
    import jax.numpy as jnp

    prior = np.bincount(labels, minlength=num_classes) / len(labels)
    return np.asarray(correct_prior(jnp.asarray(logits), prior))


def _shifted(ctx: Context, max_per_class: int = MAX_PER_CLASS,
             factors: Sequence[int] = IMBALANCE_FACTORS) -> Sections:
    """The test-agnostic protocol: each test distribution as predicted and with the method's
    oracle prior correction (when it has one)."""
    num_classes, correct = ctx.dataset.num_classes, ctx.method.correct_prior
    distributions = {}
    for name, sub_experts, sub_logits, sub_labels, _ in shifted_predictions(
            ctx, max_per_class, factors):
        corrected = None
        if correct is not None:
            corrected = ctx.metric_report(
                sub_experts, corrected_logits(sub_logits, sub_labels, num_classes, correct),
                sub_labels)
        distributions[name] = {
            "num_images": int(sub_labels.shape[0]),
            "expert_top1_samples": [100.0 * float(np.mean(e.argmax(-1) == sub_labels))
                                    for e in sub_experts],
            "class_counts": np.bincount(sub_labels, minlength=num_classes).tolist(),
            "plain": ctx.metric_report(sub_experts, sub_logits, sub_labels),
            "corrected": corrected}
    lists = shifted_test_lists(ctx.config.data)
    head = int(min(max_per_class, np.bincount(ctx.labels, minlength=num_classes).min()))
    return {"distributions": distributions,
            "meta": {"shifted_test_lists": (files.dirname(next(iter(lists.values())))
                                            if lists else None),
                     "test_distribution_head": head}}


def _validate_shifted(max_per_class: int = MAX_PER_CLASS,
                      factors: Sequence[int] = IMBALANCE_FACTORS) -> None:
    if int(max_per_class) < 1:
        raise ValueError(f"evals.shifted.max_per_class={max_per_class}; expected >= 1")
    if not factors or any(float(f) < 1 for f in factors):
        raise ValueError(f"evals.shifted.factors={tuple(factors)}; expected imbalance factors "
                         ">= 1")


def _shifted_markdown(report: dict) -> list[str]:
    meta = report["meta"]
    expert_columns = ("".join(f" expert {k} |" for k in range(meta["num_experts"]))
                      if meta["num_experts"] > 1 else "")
    lines = [
        "## Test-agnostic protocol", "",
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
        cells = [str(d["num_images"]), cell(plain["top1_samples"]),
                 cell(corrected["top1_samples"]), cell(plain["nll"], 3),
                 cell(corrected["nll"], 3), cell(plain["ece"]), cell(corrected["ece"])]
        if meta["num_experts"] > 1:
            cells += [cell(x) for x in d["expert_top1_samples"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if not meta["prior_correction"]:
        lines += ["", f"{meta['method']} has no test-prior correction: '+ prior' columns are '-'."]
    return lines


def _shifted_pictures(target, report: dict, ctx: Context) -> None:
    meta = report["meta"]
    lambdas, num_experts = meta["lambdas"], ctx.expert_logits.shape[0]
    names = list(report["distributions"])
    dists = report["distributions"]
    experts = None
    if num_experts > 1:
        experts = {expert_name(k, lambdas): [dists[n]["expert_top1_samples"][k] for n in names]
                   for k in range(num_experts)}
    plots.test_distribution_accuracy(
        target("test_distributions.png"), names,
        [dists[n]["plain"]["top1_samples"] for n in names],
        None if not meta["prior_correction"]
        else [dists[n]["corrected"]["top1_samples"] for n in names], experts)


BUILTIN = {
    "uniform": Evaluator(_uniform, markdown=_uniform_markdown, pictures=_uniform_pictures,
                         order=0),
    "shifted": Evaluator(_shifted, validate=_validate_shifted, markdown=_shifted_markdown,
                         pictures=_shifted_pictures, order=10),
}
