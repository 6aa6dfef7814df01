"""Multi-stage methods as a sequence of ordinary runs, all from one config.

Several methods train in stages: RIDE's router is trained on a frozen stage-1 model (and RIDE may
distil from a 6-expert teacher first), ALA + MoE distils its mixture into one expert, the
class-balanced experts fine-tune a baseline on class subsets and then fuse. A stage is a normal
`trainer.Run` with its own workdir, so it checkpoints, resumes and reports like any run.

Config: `config.stage_order` names the stages in order (empty: a single run); `config.stages.<name>`
holds that stage's overrides of the config, merged recursively (e.g. `num_epochs`,
`method.stage`, `data.sampler`), plus two links:

- `init_from`: the stage whose final checkpoint initialises this stage's model
  (`model.init_checkpoint`; shapes that differ, e.g. a new head, keep their initialisation);
- `teacher_from`: the stage whose trained model is this stage's distillation teacher.

Stage `name` runs in `<workdir>/<name>`; a stage whose `final_metrics.json` exists is done and is
not run again, so relaunching the same command resumes the pipeline. The last stage's metrics
(with each stage's under `stages`) go to `<workdir>/final_metrics.json`. A method that ends in a
step other than training (the class-balanced experts' fusion) names it in `config.finish`;
`FINISHERS` maps it to `fn(config, workdir, runs) -> final metrics dict`.

A single-stage config with `teacher.workdir` set distils from that finished run (its
config.json describes the teacher's model), e.g. RIDE's students from a published teacher.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Callable

import jax
import ml_collections

from ltx import trainer

LINK_KEYS = ("init_from", "teacher_from")


def _finishers() -> dict[str, Callable[..., dict[str, Any]]]:
    from ltx.methods import cbe
    return {"cbe_fusion": cbe.fuse_stages}


def _merge(base: ml_collections.ConfigDict, overrides) -> None:
    """Sets `overrides` (nested dicts) into `base`, recursing into existing sub-configs."""
    for key, value in overrides.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)) and isinstance(
                base.get(key), ml_collections.ConfigDict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value.to_dict() if isinstance(
                value, ml_collections.ConfigDict) else value)


def stage_configs(config: ml_collections.ConfigDict
                  ) -> list[tuple[str, ml_collections.ConfigDict, dict[str, str]]]:
    """[(name, config of the stage, links {'init_from': name, 'teacher_from': name})].

    Raises ValueError for a stage without overrides, a link to a stage that does not come
    before, or an unknown stage under `config.stages`.
    """
    order = tuple(config.get("stage_order", ()))
    stages = config.get("stages", ml_collections.ConfigDict()) or ml_collections.ConfigDict()
    unknown = sorted(set(stages.keys()) - set(order))
    if unknown:
        raise ValueError(f"config.stages has {unknown} but config.stage_order={order}; expected "
                         "every stage to be listed in stage_order")
    if len(set(order)) != len(order):
        raise ValueError(f"config.stage_order={order} names a stage twice")
    base = ml_collections.ConfigDict(config.to_dict())
    for key in ("stages", "stage_order"):
        if key in base:
            del base[key]
    result = []
    for index, name in enumerate(order):
        if name not in stages:
            raise ValueError(f"config.stage_order names {name!r} but config.stages.{name} is "
                             "missing")
        overrides = stages[name].to_dict()
        links = {key: overrides.pop(key) for key in LINK_KEYS if key in overrides}
        for key, target in links.items():
            if target and target not in order[:index]:
                raise ValueError(f"config.stages.{name}.{key}={target!r}; expected one of the "
                                 f"stages before it: {list(order[:index])}")
        stage = ml_collections.ConfigDict(base.to_dict())
        _merge(stage, overrides)
        result.append((name, stage, {k: v for k, v in links.items() if v}))
    return result


def _done(workdir: str) -> bool:
    return os.path.isfile(os.path.join(workdir, "final_metrics.json"))


def _finished_run(config, workdir: str, teacher=None) -> trainer.Run:
    run = trainer.Run(config, workdir, teacher=teacher)
    run.restore()
    return run


def _standalone_teacher(config) -> trainer.Teacher:
    path = config.get("teacher", {}).get("workdir", "")
    if not path:
        raise ValueError(f"method {config.method.name!r} distils from a teacher: set "
                         "config.teacher.workdir to a finished run, or add a teacher stage")
    from ltx import evaluate  # evaluate imports trainer; only needed here.
    run = evaluate.restore_run(path, None, None)
    return trainer.Teacher.from_run(run, run.state)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains every stage of `config` in order (one run without stages); returns final metrics."""
    stages = stage_configs(config)
    if not stages:
        run = trainer.Run(config, workdir)
        if run.method.needs_teacher:
            run = trainer.Run(config, workdir, teacher=_standalone_teacher(config))
        return run.train()
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    runs: dict[str, trainer.Run] = {}
    summaries: dict[str, dict[str, Any]] = {}
    final: dict[str, Any] = {}
    for name, stage_config, links in stages:
        stage_dir = os.path.join(workdir, name)
        if "init_from" in links:
            stage_config.model.init_checkpoint = os.path.join(workdir, links["init_from"])
        teacher = None
        if "teacher_from" in links:
            source = runs[links["teacher_from"]]
            if getattr(source, "state", None) is None:
                source.restore()
            teacher = trainer.Teacher.from_run(source, source.state)
        if is_main:
            print(f"\n=== stage {name} ({stage_config.method.name}) in {stage_dir} ===",
                  flush=True)
        if _done(stage_dir):
            runs[name] = _finished_run(stage_config, stage_dir, teacher)
            with open(os.path.join(stage_dir, "final_metrics.json")) as f:
                final = json.load(f)
            if is_main:
                print(f"already finished: {final.get('top1_all', float('nan')):.2f} top-1",
                      flush=True)
        else:
            run = trainer.Run(stage_config, stage_dir, teacher=teacher)
            if run.method.needs_teacher and teacher is None:
                # A distilling stage without a teacher stage: the finished run in teacher.workdir.
                run = trainer.Run(stage_config, stage_dir,
                                  teacher=_standalone_teacher(stage_config))
            runs[name] = run
            final = run.train()
        summaries[name] = {k: final[k] for k in ("top1_all", "top1_many", "top1_medium",
                                                  "top1_few", "ece", "train_seconds")
                           if k in final}
    finish = config.get("finish", "")
    if finish:
        finishers = _finishers()
        if finish not in finishers:
            raise ValueError(f"config.finish={finish!r}; expected one of {sorted(finishers)}")
        final = finishers[finish](config, workdir, runs)
    final = dict(final)
    final["stages"] = summaries
    final["train_seconds"] = sum(s.get("train_seconds", 0.0) for s in summaries.values())
    if is_main:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump(final, f, indent=2, sort_keys=True)
    return final
