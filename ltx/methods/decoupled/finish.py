"""tau-normalisation and NCM on a finished joint run: the statistics they need (features of a
split, the tau of the best balanced accuracy, the class means), their predictor and their finish
steps (`config.finish = 'tau_norm' | 'ncm'`).

The predictor is an ordinary `ltx.predictor.Predictor`: the joint run's variables (plus, for NCM,
the collection 'ncm' of class means) under the decoupled model (`models.TauNormModel`,
`models.NCMModel`), with the joint stage's config whose `method` is the decoupled one, the
selected tau filled in. `ltx-eval` and `ltx-predict` rebuild it from the workdir
(`final_predictor`), selecting tau or computing the class means again: the same numbers, as
both are deterministic functions of the joint checkpoint.
"""

from __future__ import annotations

from typing import Any

import dataclasses

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ltx import evaluation, files
from ltx.methods.decoupled import classifiers
from ltx.methods.decoupled.config import FINISHED_KINDS, SPLITS
from ltx.methods.decoupled.models import FeaturesModel
from ltx.models.multi_expert import EXPERTS_NAME, MultiExpertNet


def joint_run(config, runs: dict[str, Any]) -> Any:
    """The trained run a finish step re-balances: the last stage of `config.stage_order`."""
    order = tuple(config.get("stage_order", ()))
    kind = config.method.name
    if not order:
        raise ValueError(f"config.finish={kind!r} runs after the stages of a config; "
                         "config.stage_order is empty (ltx.methods.decoupled.config.add_stage "
                         "adds the joint stage)")
    run = runs[order[-1]]
    if not isinstance(run.model, MultiExpertNet):
        raise ValueError(f"{kind!r} re-balances the classifier of a trunk, but stage "
                         f"{order[-1]!r} trains {type(run.model).__name__} (method "
                         f"{run.method.name!r}), a trunk with additions")
    return run


def split_features(run, split) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features float32 [E, N, F], labels [N]) of `run`'s trunk on `split` ('train',
    'val', 'test' or a `Split`): the evaluation transform, BatchNorm in inference mode (the
    official feature extraction, whose training split is `train_plain`)."""
    features = dataclasses.replace(run, model=FeaturesModel(run.model), eval_step=None)
    outputs, labels = features.outputs(split)
    return np.asarray(outputs.logits, np.float32), np.asarray(labels)


def _method_and_model(config, counts):
    """(Method, model) of `config` for these training counts (`ltx.methods.build_with_model`)."""
    from ltx import methods  # The registry imports this home.
    return methods.build_with_model(config, counts)


def _run_config(config, run, **method_updates) -> ml_collections.ConfigDict:
    """The joint stage's config with the decoupled `config.method` (and `method_updates`)."""
    result = ml_collections.ConfigDict(run.config.to_dict())
    method = config.method.to_dict()
    method.update(method_updates)
    result.method = ml_collections.ConfigDict(method)
    return result


def _select_tau(config, run) -> tuple[float, dict[str, Any]]:
    cfg = config.method
    taus = tuple(float(t) for t in cfg.tau_norm_grid)
    split_name = cfg.tau_norm_split
    if split_name not in SPLITS:
        raise ValueError(f"config.method.tau_norm_split={split_name!r}; expected one of {SPLITS}")
    if getattr(run.dataset, split_name) is None:
        raise ValueError(f"config.method.tau_norm_split={split_name!r}, but dataset "
                         f"{run.dataset.name} has no {split_name} split; set "
                         "method.tau_norm_split to another split, or method.tau_norm to a "
                         "fixed tau >= 0")
    features, labels = split_features(run, split_name)
    params = jax.device_get(run.variables["params"])
    kernel = np.asarray(params[EXPERTS_NAME]["head"]["dense"]["kernel"], np.float32)
    accuracies = classifiers.tau_sweep(
        features, kernel, labels, taus=taus,
        aggregate=lambda outputs: run.method.aggregate(outputs, params))
    tau = classifiers.select_tau(accuracies, taus)
    return tau, {"tau_norm": tau, "tau_norm_split": split_name,
                 "tau_norm_sweep": {f"{t:g}": 100.0 * float(a)
                                    for t, a in zip(taus, accuracies)}}


def decoupled_predictor(config, runs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(the predictor of `config.method` on the joint run, what was chosen or computed).

    tau_norm: tau is `method.tau_norm` when >= 0, else the first tau of `method.tau_norm_grid`
    with the best balanced accuracy of the aggregated prediction on `method.tau_norm_split`.
    ncm: the mean and class means of the training split's features (`ncm_statistics`).
    """
    kind = config.method.name
    if kind not in FINISHED_KINDS:
        raise ValueError(f"config.method.name={kind!r}; the decoupled finish steps are "
                         f"{FINISHED_KINDS}")
    run = joint_run(config, runs)
    counts = run.dataset.class_counts
    if kind == "tau_norm":
        tau = float(config.method.tau_norm)
        # The model first: its checks (a linear head) come before a pass over a split.
        _method_and_model(_run_config(config, run, tau_norm=max(tau, 0.0)), counts)
        details: dict[str, Any] = {"tau_norm": tau}
        if tau < 0:
            tau, details = _select_tau(config, run)
        run_config = _run_config(config, run, tau_norm=tau)
        method, model = _method_and_model(run_config, counts)
        return dataclasses.replace(run, config=run_config, method=method, model=model,
                                   eval_step=None), details
    run_config = _run_config(config, run)
    method, model = _method_and_model(run_config, counts)
    features, labels = split_features(run, "train")
    mean, centroids = classifiers.ncm_statistics(
        features, labels, len(counts), run_config.method.ncm_features)
    variables = dict(run.variables)
    replicated = NamedSharding(run.mesh, P())  # The same host arrays on every process.
    variables["ncm"] = jax.tree.map(lambda x: jax.make_array_from_callback(
        x.shape, replicated, lambda index: x[index]), {"mean": mean, "centroids": centroids})
    details = {"ncm_features": run_config.method.ncm_features,
               "ncm_distance": run_config.method.ncm_distance,
               "ncm_train_images": int(labels.shape[0])}
    return dataclasses.replace(run, config=run_config, method=method, model=model,
                               variables=variables, eval_step=None), details


def finish_step(config, workdir: str, runs: dict[str, Any]) -> dict[str, Any]:
    """`config.finish = 'tau_norm' | 'ncm'`: evaluates the re-balanced joint run on test (and
    val) and writes `<workdir>/<kind>.json` (what was chosen, e.g. tau and the accuracy of every
    tau on its split, and both reports); returns the final metrics (the test report, `val_*`
    keys and the run keys)."""
    kind = config.method.name
    if config.get("finish", "") != kind:
        raise ValueError(f"config.finish={config.get('finish', '')!r} but config.method.name="
                         f"{kind!r}; expected the same decoupled classifier in both")
    predictor, details = decoupled_predictor(config, runs)
    rows = {"test": predictor.evaluate("test")}
    if predictor.dataset.val is not None:
        rows["val"] = predictor.evaluate("val")
    final = dict(rows["test"])
    final.update({f"val_{k}": v for k, v in rows.get("val", {}).items()})
    final.update({k: v for k, v in details.items() if not isinstance(v, dict)})
    final.update({"seed": config.seed, "steps": predictor.step, "epochs": config.num_epochs,
                  "dataset": predictor.dataset.name, "method": kind,
                  "num_experts": predictor.method.num_experts,
                  "shot_convention": config.eval.shot_convention})
    if jax.process_index() == 0:
        files.makedirs(workdir)
        files.write_json(files.join(workdir, f"{kind}.json"), {**details, **rows},
                         sort_keys=False)
        chosen = (f" with tau {details['tau_norm']:g}" if kind == "tau_norm" else "")
        print(f"\n{kind}{chosen} on stage {config.stage_order[-1]!r}:\n"
              f"{evaluation.format_table(rows)}", flush=True)
    return final
