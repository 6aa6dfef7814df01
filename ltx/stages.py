"""Multi-stage methods as a sequence of ordinary runs, all from one config.

Several methods train in stages: RIDE's router is trained on a frozen stage-1 model (and RIDE may
distil from a 6-expert teacher first), ALA + MoE distils its mixture into one expert, the
class-balanced experts fine-tune a baseline on class subsets and then fuse. A stage is a normal
`trainer.train_and_evaluate` run with its own workdir, so it checkpoints, resumes and reports like any run.

Config: `config.stage_order` names the stages in order (empty: a single run); `config.stages.<name>`
holds that stage's overrides of the config, merged recursively (e.g. `num_epochs`,
`method.stage`, `data.sampler`; only existing fields), plus two links
(`ltx.config_lib.stage_configs`):

- `init_from`: the stage whose final checkpoint initialises this stage's model
  (`model.init_checkpoint`; shapes that differ, e.g. a new head, keep their initialisation);
- `teacher_from`: the stage whose trained model is this stage's distillation teacher.

Stage `name` runs in `<workdir>/<name>`; a stage whose `final_metrics.json` exists is done and is
not run again, so relaunching the same command resumes the pipeline. The last stage's metrics
(with each stage's under `stages`) go to `<workdir>/final_metrics.json`. A method that ends in a
step other than training (the class-balanced experts' fusion) names it in `config.finish`, one
of its home's `FINISH_STEPS` (`ltx.methods.finish_step`).

A config (or stage) whose method distils and that has no `teacher_from` stage distils from the
finished run in `teacher.workdir` (its config.json describes the teacher's model), e.g. RIDE's
students from a published teacher.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from ltx import (checkpointing, config_check, config_lib, evaluation, files, methods,
                 parts as parts_lib, steps, trainer, workdirs)
from ltx.predictor import Predictor


def _teacher_from_workdir(config) -> steps.Teacher:
    path = config.teacher.workdir
    if not path:
        raise ValueError(f"method {config.method.name!r} distils from a teacher: set "
                         "config.teacher.workdir to a finished run, or add a teacher stage")
    predictor = workdirs.final_predictor(path)
    if not isinstance(predictor, Predictor):
        raise ValueError(f"config.teacher.workdir={path!r} is a fused multi-model workdir; "
                         "expected a run whose model can be distilled")
    return steps.Teacher.from_predictor(predictor)


def _train_one(config, workdir: str, teacher: steps.Teacher | None
               ) -> tuple[dict[str, Any], Predictor]:
    """Trains one run of `config` with its teacher: the given one, else `teacher.workdir`'s
    when the method distils."""
    parts = parts_lib.build(config)
    if parts.method.needs_teacher and teacher is None:
        teacher = _teacher_from_workdir(config)
    return trainer.train_and_evaluate(config, workdir, parts=parts, teacher=teacher)


def _already_finished(workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The stored final metrics of a finished workdir, printed (with the config keys that the
    given config changes, since none of them took effect); nothing is written."""
    final = workdirs.read_final_metrics(workdir)
    if jax.process_index() == 0:
        print(f"{workdir} has finished already ({final.get('steps', '?')} steps); nothing was "
              "trained or written. Its final metrics (final_metrics.json):", flush=True)
        changed = _changes_from_saved(workdir, config)
        if changed:
            print(f"Note: these values of the config given were not used; the run was trained "
                  f"with its {workdirs.CONFIG_FILE} ('checkpoint' below): {changed}", flush=True)
        rows = {"test": {k: v for k, v in final.items() if not k.startswith("val_")}}
        if any(k.startswith("val_") for k in final):
            rows["val"] = {k[4:]: v for k, v in final.items() if k.startswith("val_")}
        try:
            print(evaluation.format_table(rows), flush=True)
        except (KeyError, TypeError, ValueError):
            print(json.dumps(final, indent=2, sort_keys=True), flush=True)
        print("Use a new --workdir to train again.", flush=True)
    return final


def _changes_from_saved(workdir: str, config: ml_collections.ConfigDict) -> str:
    """The dotted keys whose values differ between `config` and the workdir's config.json
    ('' when they agree or config.json cannot be read)."""
    try:
        saved = files.read_json(files.join(workdir, workdirs.CONFIG_FILE))
    except (OSError, ValueError):
        return ""
    given = json.loads(config.to_json_best_effort())
    return "" if saved == given else checkpointing.differences(saved, given)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains every stage of `config` in order (one run without stages); returns final metrics.

    The whole config (every stage) is checked first (`ltx.config_check`), so a bad value fails
    before anything is read or trained; a finished workdir is reported, not trained again.
    """
    config_check.check(config)
    if workdirs.is_finished(workdir):
        return _already_finished(workdir, config)
    stages = config_lib.stage_configs(config)
    if not stages:
        return _train_one(config, workdir, None)[0]
    finish = methods.finish_step(config)  # Checked before anything trains.
    is_main = jax.process_index() == 0
    if is_main:
        workdirs.write_config(workdir, config)
    runs: dict[str, Predictor] = {}
    summaries: dict[str, dict[str, Any]] = {}
    final: dict[str, Any] = {}
    for name, stage_config, links in stages:
        stage_dir = files.join(workdir, name)
        if "init_from" in links:
            stage_config.model.init_checkpoint = files.join(workdir, links["init_from"])
        if is_main:
            print(f"\n=== stage {name} ({stage_config.method.name}) in {stage_dir} ===",
                  flush=True)
        if workdirs.is_finished(stage_dir):
            runs[name] = workdirs.restore_run(stage_dir, None, stage_config)
            final = workdirs.read_final_metrics(stage_dir)
            if is_main:
                print(f"already finished: {final.get('top1_all', float('nan')):.2f} top-1",
                      flush=True)
        else:
            teacher = None
            if "teacher_from" in links:
                teacher = steps.Teacher.from_predictor(runs[links["teacher_from"]])
            final, runs[name] = _train_one(stage_config, stage_dir, teacher)
        summaries[name] = {k: final[k] for k in ("top1_all", "top1_many", "top1_medium",
                                                  "top1_few", "ece", "train_seconds")
                           if k in final}
    if finish is not None:
        final = finish(config, workdir, runs)
    final = dict(final)
    final["stages"] = summaries
    final["train_seconds"] = sum(s.get("train_seconds", 0.0) for s in summaries.values())
    if is_main:
        workdirs.write_final_metrics(workdir, final)
    return final
