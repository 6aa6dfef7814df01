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

from ltx import (checkpointing, config_check, config_lib, evaluation, faults, files, methods,
                 packed, parts as parts_lib, steps, trainer, workdirs)
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
    result, = _train_runs([(config, workdir)], pack=False)
    return result


def train_packed(config: ml_collections.ConfigDict, workdir: str
                 ) -> dict[str, dict[str, Any] | faults.Diverged]:
    """Trains the runs of `config.pack.seeds` (`ltx.packed`), each stage of them as one
    program, in `<workdir>/seed<k>`; returns {run workdir: final metrics, or the
    `faults.Diverged` that stopped that run}. Finished runs are reported, not trained again."""
    config_check.check(config)
    results, todo = {}, []
    for run_config, run_dir in packed.run_configs(config, workdir):
        if workdirs.is_finished(run_dir):
            results[run_dir] = _already_finished(run_dir, run_config)
        else:
            todo.append((run_config, run_dir))
    if todo:
        results.update(zip([w for _, w in todo], _train_runs(todo, pack=True)))
    return results


def _train_group(group: list, pack: bool) -> list:
    """[(final, Predictor) or faults.Diverged] of the runs [(config, workdir, teacher)]: one run
    alone, or (`pack`) the runs as one program (a single remaining run alone too)."""
    if len(group) == 1:
        config, workdir, teacher = group[0]
        if not pack:
            return [_train_one(config, workdir, teacher)]
        try:
            return [_train_one(config, workdir, teacher)]
        except faults.Diverged as err:
            return [err]
    configs, dirs, teachers = (list(x) for x in zip(*group))
    parts = parts_lib.build(configs[0])
    if parts.method.needs_teacher and teachers[0] is None:
        teachers = [_teacher_from_workdir(c) for c in configs]
    return packed.train_and_evaluate(configs, dirs, parts=parts,
                                     teachers=None if teachers[0] is None else teachers)


def _train_runs(runs: list, pack: bool) -> list:
    """Trains the runs [(config, workdir)] of one recipe stage by stage (packed together with
    `pack`); returns each run's final metrics (or, packed, the `faults.Diverged` that stopped
    it)."""
    stage_lists = [config_lib.stage_configs(config) for config, _ in runs]
    if not stage_lists[0]:
        trained = _train_group([(config, workdir, None) for config, workdir in runs], pack)
        return [r if isinstance(r, faults.Diverged) else r[0] for r in trained]
    finish = methods.finish_step(runs[0][0])  # Checked before anything trains.
    is_main = jax.process_index() == 0
    if is_main:
        for config, workdir in runs:
            workdirs.write_config(workdir, config)
    trained: list[dict[str, Predictor]] = [{} for _ in runs]
    summaries: list[dict[str, dict[str, Any]]] = [{} for _ in runs]
    finals: list[Any] = [{} for _ in runs]
    for index, (name, _, _) in enumerate(stage_lists[0]):
        group, members = [], []
        for k, (_, workdir) in enumerate(runs):
            if isinstance(finals[k], faults.Diverged):
                continue
            _, stage_config, links = stage_lists[k][index]
            stage_dir = files.join(workdir, name)
            if "init_from" in links:
                stage_config.model.init_checkpoint = files.join(workdir, links["init_from"])
            if is_main:
                print(f"\n=== stage {name} ({stage_config.method.name}) in {stage_dir} ===",
                      flush=True)
            if workdirs.is_finished(stage_dir):
                trained[k][name] = workdirs.restore_run(stage_dir, None, stage_config)
                finals[k] = workdirs.read_final_metrics(stage_dir)
                if is_main:
                    print(f"already finished: {finals[k].get('top1_all', float('nan')):.2f} "
                          "top-1", flush=True)
            else:
                teacher = None
                if "teacher_from" in links:
                    teacher = steps.Teacher.from_predictor(trained[k][links["teacher_from"]])
                group.append((stage_config, stage_dir, teacher))
                members.append(k)
        for k, result in zip(members, _train_group(group, pack) if group else []):
            if isinstance(result, faults.Diverged):
                finals[k] = result
            else:
                finals[k], trained[k][name] = result
        for k in range(len(runs)):
            if not isinstance(finals[k], faults.Diverged):
                summaries[k][name] = {key: finals[k][key] for key in (
                    "top1_all", "top1_many", "top1_medium", "top1_few", "ece", "train_seconds")
                    if key in finals[k]}
    return [final if isinstance(final, faults.Diverged) else
            _finish(config, workdir, finish, trained[k], summaries[k], final)
            for k, ((config, workdir), final) in enumerate(zip(runs, finals))]


def _finish(config, workdir: str, finish, trained: dict, summaries: dict,
            final: dict[str, Any]) -> dict[str, Any]:
    """The final metrics of a finished multi-stage run (its finishing step's, else its last
    stage's, with each stage's summary), written to `<workdir>/final_metrics.json`."""
    if finish is not None:
        final = finish(config, workdir, trained)
    final = dict(final)
    final["stages"] = summaries
    final["train_seconds"] = sum(s.get("train_seconds", 0.0) for s in summaries.values())
    if jax.process_index() == 0:
        workdirs.write_final_metrics(workdir, final)
    return final
