"""Everything a long-tail paper reports, from a finished training workdir, in one command.

    ltx-eval --workdir=runs/digits [--shot_convention=lfme] [--step=N] [--evals=...]
    python -m ltx.cli eval --workdir=...                    # the same, without the scripts

The method's final predictor is rebuilt from the workdir (`ltx.workdirs.final_predictor`: the
run, the last stage of a multi-stage run, or the fused class-balanced experts) with its latest
(or `--step`) checkpoint, the test split is predicted once, and everything else is computed from
those expert logits:

- the uniform test set: top-1 over all classes and the many/medium/few groups (mean of per-class
  accuracies; the shot convention is selectable, default the run's `config.eval.shot_convention`),
  NLL, ECE, MCE (15 bins), Brier, for the ensemble and each expert;
- the test-agnostic protocol (docs/shared.md): forward and backward long-tailed test
  sets cut from the test split with at most `max_per_class` images per class (100 for CIFAR; the
  smallest per-class test count when lower, 30 for digits-LT), imbalance factors 2, 5, 10, 25, 50,
  the same seed-0 selection as the training subset (`long_tail_indices`). Forward-r keeps the
  head classes whole; backward-r is the reversed profile. Each is evaluated as predicted and with
  the oracle correction for the subset's empirical class frequencies q (the method's
  `correct_prior`: log q added to the ensemble logits, minus mean(lambda) log pi when the lambdas
  are not balanced). On these imbalanced sets the headline accuracy is the sample accuracy
  (`top1_samples`), as in the references' tables.

Each part is an evaluator (`ltx.evaluators`) named in the run's `config.evals` ('uniform',
'shifted', 'expert_priors', 'routing', 'fusions' by default; those that do not apply to the
method are skipped) or on the command line (`--evals=...`); a method's home registers the ones
only it knows. It writes `<workdir>/eval/report.json` (all numbers; NaN, e.g. a shot group with
no class in a subset, becomes null), `<workdir>/eval/report.md` (Markdown tables) and the
pictures of `ltx.plots`; a method without a test-prior correction gets the plain numbers only.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ltx import evaluators, files, methods, workdirs
from ltx.data import shots
# The shifted test sets' helpers, by their earlier home's names.
from ltx.evaluators import (IMBALANCE_FACTORS, MAX_PER_CLASS, corrected_logits,  # noqa: F401
                            shifted_test_lists, shifted_test_sets)


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


def resolve_evals(config, extra: dict[str, dict[str, Any]] | None = None
                  ) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """({name: settings} to run, the names asked for in `extra`): the config's evaluators, then
    `extra`'s (whose settings replace a configured one's). Unknown names and bad settings raise
    ValueError here, before any model is restored."""
    named = methods.configured_evaluators(config)
    for name, settings in (extra or {}).items():
        named[name] = {**named.get(name, {}), **(settings or {})}
    for name, settings in named.items():
        evaluator = methods.evaluator(name)
        if evaluator.validate is not None:
            evaluator.validate(**settings)
    return named, set(extra or ())


def evaluate_workdir(workdir: str, *, shot_convention: str | None = None,
                     step: int | None = None, max_per_class: int | None = None,
                     factors: Sequence[int] | None = None, num_bins: int | None = None,
                     pictures: bool = True, verbose: bool = False, predictor=None,
                     evals: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Evaluates the final predictor of `workdir` and writes `<workdir>/eval/`; returns the report.

    Args:
      workdir: a finished training workdir (config.json and checkpoints/, or stage directories).
      shot_convention: a name of `ltx.data.shots.SHOT_CONVENTIONS`; default: the run's.
      step: checkpoint step (of the last stage); default the latest.
      max_per_class, factors: the 'shifted' evaluator's head size and imbalance factors (default:
        the config's, `config.evals.shifted`).
      num_bins: calibration bins; default the run's `config.eval.num_bins`.
      pictures: also draw the PNGs.
      verbose: print the Markdown report.
      predictor: the workdir's predictor (`ltx.workdirs.final_predictor`); default: restored.
        The one `ltx.trainer.train_and_evaluate` returns saves rebuilding and recompiling it.
      evals: {evaluator name: settings} to run after the config's (`config.evals`), e.g.
        {'test_time_aggregation': {'epochs': 50}}; one that does not apply raises ValueError.

    Returns:
      The dict written to report.json: 'meta' and each evaluator's sections ('uniform'
      {'ensemble', 'experts'}, 'per_class', 'distributions' {name: {'num_images',
      'class_counts', 'plain', 'corrected'}}, 'expert_priors', 'routing', 'test_time',
      'fusions', ...).
    """
    if shot_convention is not None and shot_convention not in shots.SHOT_CONVENTIONS:
        raise ValueError(f"unknown shot convention {shot_convention!r}; expected one of "
                         f"{sorted(shots.SHOT_CONVENTIONS)}")
    extra = _with_shifted_settings(evals, max_per_class, factors)
    if predictor is None:
        predictor = workdirs.final_predictor(workdir, step)
    cfg = predictor.config
    chosen = methods.applicable_evaluators(predictor.method, *resolve_evals(cfg, extra))
    convention = shot_convention or cfg.eval.shot_convention
    num_bins = num_bins or cfg.eval.num_bins
    outputs, logits, labels = predictor.predict("test")
    report: dict[str, Any] = {"meta": _meta(workdir, predictor, outputs, labels, convention,
                                            num_bins, list(chosen))}
    context = evaluators.Context(
        config=cfg, dataset=predictor.dataset, method=predictor.method, outputs=outputs,
        logits=logits, labels=labels, convention=convention, num_bins=num_bins,
        predict=predictor.predict, predict_images=predictor.predict_images, report=report,
        settings={name: settings for name, (_, settings) in chosen.items()}, predictor=predictor)
    for name, (evaluator, settings) in chosen.items():
        for key, value in evaluator.sections(name, context, **settings).items():
            if key == "meta":
                report["meta"].update(value)
            else:
                report[key] = value
    return _write(workdir, report, context, pictures=pictures, verbose=verbose)


def _with_shifted_settings(evals, max_per_class, factors) -> dict[str, dict[str, Any]]:
    """`evals` ({name: settings} or None) with the 'shifted' evaluator's settings given as
    their own arguments added."""
    extra = dict(evals or {})
    if max_per_class is not None or factors is not None:
        shifted = dict(extra.get("shifted", {}))
        shifted.update({k: v for k, v in (("max_per_class", max_per_class),
                                          ("factors", factors)) if v is not None})
        extra["shifted"] = shifted
    return extra


def _write(workdir: str, report: dict, context, *, pictures: bool, verbose: bool) -> dict:
    """Writes `<workdir>/eval/` (report.json, report.md and the pictures); returns the report
    as written (strict JSON values, with 'pictures')."""
    out_dir = files.join(workdir, "eval")
    files.makedirs(out_dir)
    safe = _json_safe(report)
    files.write_json(files.join(out_dir, "report.json"), safe, sort_keys=False)
    markdown = format_markdown(safe)
    files.write_text(files.join(out_dir, "report.md"), markdown)
    if pictures:
        safe["pictures"] = draw_pictures(out_dir, safe, context)
    if verbose:
        print(markdown)
    return safe


def _meta(workdir, predictor, outputs, labels, convention: str, num_bins: int,
          evals: list[str]) -> dict[str, Any]:
    """The report's 'meta' section: what was evaluated, on what, by which rules."""
    dataset, method = predictor.dataset, predictor.method
    groups = shots.shot_groups(dataset.class_counts, convention)
    return {
        "workdir": files.absolute(workdir), "step": int(predictor.step),
        "dataset": dataset.name, "method": method.name,
        "num_experts": int(np.asarray(outputs.logits).shape[0]),
        "lambdas": list(method.expert_lambdas or ()),
        "seed": predictor.config.seed, "shot_convention": convention,
        "shot_rule": shots.SHOT_CONVENTIONS[convention].description,
        "shot_groups": {name: np.flatnonzero(groups == i).tolist()
                        for i, name in enumerate(shots.GROUP_NAMES)},
        "train_class_counts": dataset.class_counts.tolist(), "num_bins": num_bins,
        "test_images": int(labels.shape[0]), "prior_correction": method.correct_prior is not None,
        "evals": evals,
    }


def draw_pictures(out_dir: str, report: dict, context: evaluators.Context) -> list[str]:
    """Writes the PNGs of the report's evaluators into `out_dir`; returns their paths."""
    paths = []

    def target(name):
        paths.append(files.join(out_dir, name))
        return paths[-1]

    for name in report["meta"]["evals"]:
        evaluator = methods.evaluator(name)
        if evaluator.pictures is not None:
            evaluator.pictures(target, report, context)
    return paths


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
        "Brier per image.",
    ]
    for name in meta["evals"]:
        evaluator = methods.evaluator(name)
        if evaluator.markdown is not None:
            lines += [""] + evaluator.markdown(report)
    return "\n".join(lines) + "\n"
