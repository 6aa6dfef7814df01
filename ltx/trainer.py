"""Config in, trained and evaluated model out: `train_and_evaluate`, one function from a laptop
CPU to a pod.

It reads top to bottom: build the parts (`ltx.parts`), restore the newest intact checkpoint or
initialise, then loop: step, log, evaluate, checkpoint, stop; then the final report. The steps
themselves are pure builders (`ltx.steps`); evaluation goes through `ltx.predictor.Predictor`,
the same object `ltx-eval` and `ltx-predict` restore.

A run writes into its workdir: `config.json`, `metrics.jsonl` (one JSON object per log/eval
point), `checkpoints/` (orbax, keep-N, resumed automatically) and, when finished,
`final_metrics.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ltx import (checkpointing, config_check, evaluation, faults, files, metric_writers,
                 optim, parts as parts_lib, provenance, steps)
from ltx.data import device_augment, pipeline
from ltx.predictor import Predictor

# Distributions that give JAX an accelerator backend.
ACCELERATOR_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm60-plugin",
                       "jax-rocm7-plugin", "libtpu")


def accelerator_warning(installed=None, backend: str | None = None) -> str | None:
    """A warning when an accelerator plugin is installed but JAX runs on CPU (a driver or
    library mismatch makes JAX fall back silently); None otherwise. `installed` (names of
    installed distributions) and `backend` default to this environment's."""
    if installed is None:  # Looked up by name: listing every distribution takes 0.15-0.4 s.
        from importlib import metadata
        installed = set()
        for name in ACCELERATOR_PLUGINS:
            try:
                metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            installed.add(name)
    found = sorted(set(ACCELERATOR_PLUGINS) & {name.lower() for name in installed})
    backend = jax.default_backend() if backend is None else backend
    if not found or backend != "cpu":
        return None
    return (f"{', '.join(found)} is installed but JAX runs on CPU, so the accelerator is "
            "unused; `python -c \"import jax; print(jax.devices())\"` shows JAX's reason "
            "(often a driver or CUDA version mismatch)")



def crossed(step: int, steps_per_epoch: float, every: int) -> bool:
    """Whether finishing `step` (0-indexed) completes an epoch that is a multiple of `every`."""
    if every <= 0:
        return False
    before, after = math.floor(step / steps_per_epoch), math.floor((step + 1) / steps_per_epoch)
    return after > before and after % every == 0


def pretrained_variables(path: str, params, batch_stats, *, reinit: str | None = None
                         ) -> tuple[Any, Any, str]:
    """(params, batch_stats, summary) of a model initialised from `model.init_checkpoint`.

    `path` is an ltx workdir (or its checkpoints/ or checkpoints/<step> folder), whose variables
    are matched by name and shape (`checkpointing.transplant`: a one-expert checkpoint goes into
    every expert, a head of another shape keeps its initial value), or a PyTorch / safetensors /
    npz checkpoint file of a reference layout (`ltx.convert.layouts`: torchvision ResNets, the
    reference codes' multi-expert and CIFAR ResNets), converted without PyTorch. Parameters
    whose path matches the regex `reinit` (`Method.reinit`) keep their value in `params`.
    """
    fresh = jax.tree.map(lambda x: x, params)  # Its own tree: loading may fill `params`.
    if files.isfile(path):
        from ltx.convert import arrays, layouts
        state_dict = arrays.load_state_dict(path)
        variables, report = layouts.convert(
            state_dict.arrays, {"params": params, "batch_stats": batch_stats},
            keep_other_head=True)
        params, batch_stats = variables["params"], variables.get("batch_stats", batch_stats)
        summary = report.summary()
    else:
        source = checkpointing.load_pretrained(path)
        params, report = checkpointing.transplant(params, source["params"])
        if jax.tree.leaves(batch_stats) and jax.tree.leaves(source["batch_stats"]):
            batch_stats, _ = checkpointing.transplant(batch_stats, source["batch_stats"])
        kept = ", ".join(report["kept"][:4]) + (", ..." if len(report["kept"]) > 4 else "")
        summary = (f"{len(report['copied'])} parameters copied, "
                   f"{len(report['broadcast'])} broadcast to every expert, "
                   f"{len(report['kept'])} kept ({kept})")
    if reinit:
        mask = optim.trainable_mask(fresh, reinit)
        params = jax.tree.map(lambda keep, new, old: new if keep else old, mask, fresh, params)
        summary += (f"; {sum(jax.tree.leaves(mask))} re-initialised (the method's reinit "
                    f"{reinit!r})")
    return params, batch_stats, summary


def train_data(config: ml_collections.ConfigDict, dataset, epochs: pipeline.Epochs
               ) -> pipeline.grain.MapDataset:
    """This process's training stream: augmented normalised batches, or (augmentation on
    device) batches of indices into the training images."""
    sharding = pipeline.Sharding(jax.process_index(), jax.process_count())
    if config.data.augment.get("on_device", False):
        return pipeline.train_index_dataset(
            dataset.train, global_batch_size=config.batch_size, seed=config.seed,
            sharding=sharding, sampler=config.data.sampler, last_batch=epochs.last_batch)
    return pipeline.train_dataset(
        dataset.train, global_batch_size=config.batch_size, seed=config.seed,
        mean=dataset.mean, std=dataset.std, transform=pipeline.make_transform(config.data.augment),
        sharding=sharding, sampler=config.data.sampler, last_batch=epochs.last_batch)


def device_images(dataset, mesh: jax.sharding.Mesh) -> jax.Array:
    """The training images, uint8 [N, H, W, C] in split order, replicated on every device
    (augmentation on device)."""
    split = dataset.train
    records = [split.source[int(i)] for i in split.indices]
    labels = np.asarray([r["label"] for r in records])
    if not np.array_equal(labels, np.asarray(split.labels)):
        raise ValueError("the training split's labels differ from its records' labels; "
                         "data.augment.on_device needs them equal")
    return steps.replicate(np.stack([r["image"] for r in records]), NamedSharding(mesh, P()))


def make_feed(config, dataset, mesh: jax.sharding.Mesh):
    """`fn(host batch) -> the train step's global batch` (with the replicated training images
    under 'source' when augmenting on device), and the step's `batch_augment` (or None)."""
    to_global = steps.make_to_global(mesh)
    if not config.data.augment.get("on_device", False):
        return to_global, None
    source = device_images(dataset, mesh)
    augment = device_augment.make_batch_augment(config.data.augment, mean=dataset.mean,
                                                std=dataset.std)
    return (lambda host_batch: dict(to_global(host_batch), source=source)), augment


def initial_state(config: ml_collections.ConfigDict, parts: parts_lib.Parts, plan: parts_lib.Plan,
                  mesh: jax.sharding.Mesh, *, pretrained: bool = True,
                  init=None) -> steps.TrainState:
    """Freshly initialised state; with `pretrained`, `model.init_checkpoint` loaded into it.
    `init` is the run's `steps.make_init` program (default: built here)."""
    if init is None:
        init = steps.make_init(parts.model, plan.tx, parts.dataset.image_shape, mesh)
    state = init(parts_lib.init_key(config))
    path = config.model.get("init_checkpoint", "")
    if not (pretrained and path):
        return state
    params, batch_stats, summary = pretrained_variables(
        path, jax.device_get(state.params), jax.device_get(state.batch_stats),
        reinit=parts.method.reinit)
    if jax.process_index() == 0:
        print(f"Initialised from {path}: {summary}", flush=True)
    return steps.with_variables(state, params, batch_stats, plan.tx, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       parts: parts_lib.Parts | None = None,
                       teacher: steps.Teacher | None = None) -> tuple[dict[str, Any], Predictor]:
    """Trains `config` in `workdir` (resuming from its newest intact checkpoint), evaluates it
    and returns (final metrics, the trained model's `Predictor`).

    `parts` saves building them again; a distilling method needs its `teacher`. Stops with
    `faults.Diverged` at a non-finite loss or gradient (nothing is saved from that state; the
    last good checkpoint stays), with `faults.Preempted` after SIGTERM/SIGINT (a checkpoint of
    the current step saved first) and with `faults.WorkdirBusy` when another process trains in
    the workdir.
    """
    config_check.check(config)  # Once per config in a process (the entry point's call).
    parts = parts_lib.build(config) if parts is None else parts
    if parts.method.needs_teacher and teacher is None:
        raise ValueError(f"method {parts.method.name!r} distils from a teacher, but none was "
                         "given (set config.teacher.workdir, or run it as a stage after its "
                         "teacher)")
    files.makedirs(workdir)
    lock = faults.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    # Under jax.distributed, SIGTERM belongs to JAX's preemption notifier (behind orbax's
    # sync point); a Python handler would replace it.
    signals = faults.StopSignals()
    catch = signals if jax.process_count() == 1 else contextlib.nullcontext(signals)
    with lock, catch:
        return _train_and_evaluate(config, workdir, parts, teacher, signals)


def _train_and_evaluate(config, workdir, parts, teacher, signals):
    is_main, mesh = jax.process_index() == 0, steps.make_mesh()
    plan = parts_lib.make_plan(config, parts)
    checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep,
                                              async_save=config.checkpoint.async_save)
    iterator = None
    try:
        run = build_programs(config, parts, plan, mesh, teacher)
        train_ready, eval_ready = compile_ahead(config, parts, plan, run)
        state, iterator, seconds_before = restore_or_init(config, workdir, parts, plan, mesh,
                                                           checkpointer, init=run.init)
        writer = metric_writers.create_writer(workdir, process_index=jax.process_index(),
                                              tensorboard=config.tensorboard,
                                              resume_step=int(state.step))
        announce(config, parts, plan, int(state.step), state.params)
        progress = metric_writers.ProgressLine(plan.total_steps, config.batch_size,
                                               enabled=is_main)
        train_ready()  # The eval step may compile on while the first epochs train.
        progress.start(int(state.step))
        finite = FiniteCheck(checkpointer)
        pending, start_time = [], time.perf_counter()
        meta = {"fingerprint": parts_lib.fingerprint(config, parts),
                "recipe": checkpointing.recipe_fingerprint(config), "seed": config.seed}
        for step in range(int(state.step), plan.total_steps):
            state, metrics = run.train_step(state, run.feed(next(iterator)), run.rng,
                                            run.teacher_variables)
            pending.append((step + 1, metrics))
            last = step + 1 == plan.total_steps
            if (step + 1) % config.log_every_steps == 0 or last:
                log_metrics(step + 1, finite(pending), writer, progress, plan)
                pending = []
            if crossed(step, plan.steps_per_epoch, config.eval.every_epochs) and not last:
                eval_ready()
                periodic_eval(step + 1, run.predictor.with_variables(variables_of(state),
                                                                     step + 1), writer, plan)
            stop = stop_requested(step + 1, signals, checkpointer)
            if last or stop or crossed(step, plan.steps_per_epoch,
                                        config.checkpoint.every_epochs):
                finite(pending)  # Never save a diverged state.
                seconds = seconds_before + time.perf_counter() - start_time
                checkpointer.save(step + 1, state, iterator.get_state(),
                                  dict(meta, train_seconds=seconds), force=True)
            if stop:
                preempted(stop, step + 1, plan, checkpointer, writer)
            checkpointer.check_for_errors()
            writer.flush()
    except BaseException:
        checkpointer.close_quietly()
        raise
    finally:
        if iterator is not None:
            iterator.close()  # Stops data workers and frees their prefetched shared memory.
    checkpointer.close()
    eval_ready()
    predictor = run.predictor.with_variables(variables_of(state), int(state.step))
    wall = seconds_before + time.perf_counter() - start_time
    return final_report(config, workdir, predictor, plan, wall, writer), predictor


def preempted(reason: str, done: int, plan, checkpointer, writer) -> None:
    """Raises faults.Preempted once the checkpoint of step `done` is written."""
    checkpointer.wait_until_finished()
    writer.flush()
    raise faults.Preempted(
        f"{reason} at step {done} of {plan.total_steps}: checkpoint saved in "
        f"{checkpointer.directory}; rerun the same command to resume")


@dataclasses.dataclass(frozen=True)
class Programs:
    """What the training loop runs.

    Attributes:
      init: the jitted `rng -> TrainState` (`steps.make_init`).
      train_step: the jitted `(state, batch, rng, teacher_variables) -> (state, metrics)`.
      feed: `fn(host batch) -> the train step's global batch` (`make_feed`).
      predictor: the model's `Predictor` (its variables set at each evaluation).
      rng: the steps' base key; teacher_variables: a distilling method's teacher's, or None.
    """

    init: Any
    train_step: Any
    feed: Any
    predictor: Predictor
    rng: jax.Array
    teacher_variables: Any


def build_programs(config, parts, plan, mesh, teacher) -> Programs:
    """The run's `Programs` (built, not yet compiled; `compile_ahead` compiles them)."""
    feed, batch_augment = make_feed(config, parts.dataset, mesh)
    train_step = steps.make_train_step(
        parts.model, parts.method, plan.tx, plan.learning_rate, mesh,
        mixup_alpha=config.mixup_alpha,
        mixup_epochs=None if config.mixup_epochs < 0 else config.mixup_epochs,
        steps_per_epoch=plan.steps_per_epoch, teacher=teacher, batch_augment=batch_augment)
    return Programs(
        init=steps.make_init(parts.model, plan.tx, parts.dataset.image_shape, mesh),
        train_step=train_step, feed=feed,
        predictor=Predictor(config, parts.dataset, parts.method, parts.model, None, 0, mesh),
        rng=parts_lib.step_key(config),
        teacher_variables=None if teacher is None else teacher.variables)


def compile_ahead(config, parts, plan, run: Programs):
    """Compiles the train step and the eval step in background threads while the caller
    initialises (or restores) the state with `run.init`; returns `(train_ready, eval_ready)`,
    each blocking until its program is compiled (`steps.compile_ahead`). Waiting for the eval
    step only before the first evaluation lets the loop start about 1 s sooner on the default
    job with an empty cache (2 cores; 7.5-8.0 s from setup to the first step against 8.5-8.7 s).

    The state's shapes come from tracing `init`, the batches' from the first training batch
    and the first evaluation batch. Those two batches are prepared here once more than the
    loop needs them (for a host-augmented pipeline, one batch of decoding and augmentation),
    while the threads compile."""
    state = jax.eval_shape(run.init, parts_lib.init_key(config))
    batch = run.feed(train_data(config, parts.dataset, plan.epochs)[0])
    return steps.compile_ahead([
        (run.train_step, (state, batch, run.rng, run.teacher_variables)),
        (run.predictor.eval_step, (variables_of(state), first_eval_batch(run.predictor)))])


def first_eval_batch(predictor: Predictor) -> dict[str, jax.Array]:
    """The first global batch of the split that periodic evaluation reads, as the eval step
    receives it: every evaluation batch has its shape (`pipeline.eval_batches` pads)."""
    dataset = predictor.dataset
    batches = pipeline.eval_batches(
        dataset.val if dataset.val is not None else dataset.test,
        global_batch_size=predictor.config.eval.batch_size, mean=dataset.mean, std=dataset.std,
        transform=dataset.eval_transform,
        sharding=pipeline.Sharding(jax.process_index(), jax.process_count()))
    try:
        return steps.make_to_global(predictor.mesh)(next(batches))
    finally:
        batches.close()


def variables_of(state: steps.TrainState) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}


def restore_or_init(config, workdir, parts, plan, mesh, checkpointer, *, step="newest",
                    init=None):
    """(state, data iterator, train seconds so far) to train from: the newest intact
    checkpoint's (or that of `step`, an int; None: start afresh), else fresh ones (with
    `model.init_checkpoint` loaded; `init` as in `initial_state`). Writes config.json for a
    fresh run, `config.<step>.json` for a resume whose config changed, and the launch record
    (`ltx.provenance`)."""
    latest = checkpointer.latest_step() if step == "newest" else step
    state = initial_state(config, parts, plan, mesh, pretrained=latest is None, init=init)
    iterator = pipeline.train_iterator(train_data(config, parts.dataset, plan.epochs),
                                       num_workers=config.data.num_workers)
    seconds = 0.0
    if latest is not None:
        may_differ = ("recipe",) if config.checkpoint.allow_config_change else ()
        expected = {"fingerprint": parts_lib.fingerprint(config, parts),
                    "recipe": checkpointing.recipe_fingerprint(config)}
        if step == "newest":
            state, data_state, saved = checkpointer.restore_intact(state, expected,
                                                                   may_differ=may_differ)
        else:
            state, data_state, saved = checkpointer.restore(state, expected, step,
                                                            may_differ=may_differ)
        if data_state or int(state.step) > 0:  # `ltx-import` writes step 0 with no data state.
            iterator.set_state(data_state)
        seconds = float(saved.get("train_seconds", 0.0))
        if jax.process_index() == 0:
            print(f"Resumed from step {int(state.step)} in {checkpointer.directory}", flush=True)
    if jax.process_index() == 0:
        _write_config(config, workdir, int(state.step))
        if latest is None or not files.isfile(files.join(workdir, parts_lib.DATASET_FILE)):
            parts_lib.write_dataset_record(workdir, parts.dataset)
    return state, iterator, seconds


def _write_config(config, workdir: str, step: int) -> None:
    text = config.to_json_best_effort(indent=2)
    path = files.join(workdir, "config.json")
    written = None
    if step == 0 or not files.isfile(path):
        written = path
    elif files.read_text(path) != text:
        written = files.join(workdir, f"config.{step}.json")
    if written is not None:
        files.write_text(written, text)
    provenance.record_launch(workdir, step=step,
                             config_file=None if written is None else files.basename(written))


def announce(config, parts, plan, start_step: int, params) -> None:
    """Prints what trains on what (fresh runs: `params`, the initial state's, are counted) and
    an unused accelerator's warning."""
    if jax.process_index() != 0:
        return
    if start_step == 0:
        print(describe(config, parts, plan, params), flush=True)
    warning = accelerator_warning()
    if warning:
        print(f"Warning: {warning}", flush=True)


def stop_requested(done: int, signals: faults.StopSignals, checkpointer) -> str | None:
    """The reason to stop after step `done`: ltx's signal flag on one process, orbax's
    preemption sync point (the same step on every host) under jax.distributed."""
    if jax.process_count() == 1:
        return signals.requested
    return "preemption" if checkpointer.reached_preemption(done) else None


class FiniteCheck:
    """`check(pending)` raises faults.Diverged at the first step of `pending` [(step, metrics)]
    whose loss or gradient norm is not finite, else returns `pending` fetched to the host."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.last_finite: tuple[int, float] | None = None

    def __call__(self, pending: list) -> list:
        fetched = jax.device_get(pending)
        for step, m in fetched:
            loss = float(m["loss_sum"]) / max(float(m["count"]), 1.0)
            if not (math.isfinite(loss) and math.isfinite(float(m["grad_norm"]))):
                last = ("no finite loss yet" if self.last_finite is None else
                        "last finite loss {1:.4g} at step {0}".format(*self.last_finite))
                kept = self.checkpointer.latest_step()
                raise faults.Diverged(
                    f"training diverged: the loss is {loss} and the gradient norm "
                    f"{float(m['grad_norm'])} at step {step} ({last}), learning rate "
                    f"{float(m['lr']):.4g}. Nothing was saved from it; "
                    + (f"the last good checkpoint is step {kept} in "
                       f"{self.checkpointer.directory}." if kept is not None
                       else "no checkpoint had been written.")
                    + " Lower optimizer.lr or check the data.")
            self.last_finite = (step, loss)
        return fetched


def log_metrics(step: int, fetched: list, writer, progress, plan) -> None:
    """Writes the mean loss, train top-1, last lr and mean gradient norm of the steps since the
    last log point ([(step, host metrics)], checked finite)."""
    metrics = [m for _, m in fetched]
    count = sum(float(m["count"]) for m in metrics)
    scalars = {"loss": sum(float(m["loss_sum"]) for m in metrics) / count,
               "train_top1": 100.0 * sum(float(m["correct"]) for m in metrics) / count,
               "lr": float(metrics[-1]["lr"]),
               "grad_norm": float(np.mean([float(m["grad_norm"]) for m in metrics]))}
    scalars["img_per_s"] = progress.update(step, step / plan.steps_per_epoch, scalars)
    writer.write_scalars(step, scalars)


def periodic_eval(step: int, predictor: Predictor, writer, plan) -> None:
    """Evaluates on val (test without a val split) and logs the headline numbers."""
    split = "val" if predictor.dataset.val is not None else "test"
    report = predictor.evaluate(split)
    writer.write_scalars(step, {f"{split}/{k}": v for k, v in report.items()})
    if jax.process_index() == 0:
        value = {k: evaluation.format_value(report[k]) for k in
                 ("top1_all", "top1_many", "top1_medium", "top1_few", "ece")}
        print(f"  {split} @ epoch {round(step / plan.steps_per_epoch)}: top1 {value['top1_all']} "
              f"(many {value['top1_many']}, medium {value['top1_medium']}, few "
              f"{value['top1_few']}), ece {value['ece']}", flush=True)


def final_report(config, workdir: str, predictor: Predictor, plan, wall: float,
                  writer) -> dict[str, Any]:
    """Evaluates test (and val), writes final_metrics.json and prints the table."""
    dataset, method = predictor.dataset, predictor.method
    rows = {"test": predictor.evaluate("test")}
    if dataset.val is not None:
        rows["val"] = predictor.evaluate("val")
    final = dict(rows["test"])
    final.update({f"val_{k}": v for k, v in rows.get("val", {}).items()})
    final.update({"seed": config.seed, "steps": predictor.step, "epochs": config.num_epochs,
                  "train_seconds": wall, "dataset": dataset.name, "method": method.name,
                  "num_experts": method.num_experts,
                  "shot_convention": config.eval.shot_convention})
    writer.write_scalars(predictor.step, {f"final/{k}": v for k, v in rows["test"].items()})
    writer.close()
    if jax.process_index() == 0:
        files.write_json(files.join(workdir, "final_metrics.json"), final)
        print(f"\nFinished {plan.total_steps} steps ({config.num_epochs} epochs) in "
              f"{wall:.1f}s; metrics in {workdir}/final_metrics.json")
        print(evaluation.format_table(rows), flush=True)
    return final


def describe(config, parts: parts_lib.Parts, plan: parts_lib.Plan, params) -> str:
    """One line: the data, the method, the parameter count of `params` (the model's, from the
    initial state: counting them costs no trace of the model) and the steps on which devices."""
    d, method = parts.dataset, parts.method
    params = sum(x.size for x in jax.tree.leaves(params))
    return (f"{d.name}: {len(d.train)} train images over {d.num_classes} classes "
            f"(head {int(d.class_counts.max())}, tail {int(d.class_counts.min())}), "
            f"{len(d.test)} test | {method.name} with {method.num_experts} "
            f"expert(s), {params / 1e6:.3f} M parameters | {plan.total_steps} steps of "
            f"{config.batch_size} on {jax.device_count()} {jax.default_backend()} "
            f"device(s)")
