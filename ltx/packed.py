"""Packed runs: the runs of one recipe that differ only in seed, trained as one program.

A paper's table repeats each recipe over seeds. On an accelerator one ResNet-32 step is too small
to fill the device, so N runs compiled and launched as one program cost little more than one; on
a CPU packing saves the N - 1 extra process starts, imports, compilations and data setups.

    python -m ltx.train --config=configs/digits_lt_balpoe.py --workdir=/tmp/ltx/balpoe \\
        --config.pack.seeds=1,2,3
    ltx-sweep --configs=configs/digits_lt_balpoe.py --seeds=1,2,3 --pack --root=/tmp/ltx/table

Run k trains in `<workdir>/seed<k>` (the layout of an `ltx-sweep` cell) with the config of
`--config.seed=<k>` and no packing, and writes what it would write if trained alone: its
config.json, metrics.jsonl, checkpoints (its own data-iterator state) and final_metrics.json, so
`ltx-eval`, `ltx-predict`, a resume without packing and the sweep's table read it unchanged.
Each run keeps its own initialisation, data order, augmentation and Mixup draws (all follow from
its seed), so its numbers are those of the run trained alone.

`pack.form` ('auto': 'loop' on CPU, 'vmap' elsewhere; `ltx.steps.make_packed_train_step`):
- 'loop': the one-run program, compiled once, applied to each run in turn: bit for bit the
  runs trained alone (tests/test_packed.py), and on a CPU as fast as anything packed (XLA:CPU
  runs the batched, grouped convolutions of a vmap slowly);
- 'scan' and 'vmap': one jitted program over a stacked train state (the runs on every leaf's
  leading axis), the runs one after another inside it or batched into one wider program; XLA
  fuses these differently from the step alone, so the numbers agree with the runs alone to
  float rounding (about 3e-7 in the parameters after one step on CPU), not bit for bit.
Faults stay per run: a run whose loss or gradient turns non-finite is reported and stops (its
last good checkpoint kept; the others go on); a preemption saves every run at the same step; a
relaunch resumes every run from the newest checkpoint step they all have.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ltx import (checkpointing, config_check, config_lib, faults, files, metric_writers,
                 parts as parts_lib, steps, trainer)
from ltx.data import device_augment
from ltx.predictor import Predictor

FORMS = config_lib.PACK_FORMS


def run_configs(config: ml_collections.ConfigDict, workdir: str
                ) -> list[tuple[ml_collections.ConfigDict, str]]:
    """[(config of run k, its workdir)] of a packed config: `config.seed` set to each of
    `config.pack.seeds` in turn, packing off, under `<workdir>/seed<k>`."""
    seeds = [int(s) for s in config.pack.seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"config.pack.seeds={tuple(config.pack.seeds)} repeats a seed; "
                         "expected distinct seeds")
    runs = []
    for seed in seeds:
        run = config.copy_and_resolve_references()  # Keeps the field order of config.json.
        run.seed = seed
        run.pack.seeds = ()
        runs.append((run, files.join(workdir, f"seed{seed}")))
    return runs


def resolve_form(form: str) -> str:
    """'loop', 'scan' or 'vmap' of `config.pack.form` ('auto': loop on CPU, vmap elsewhere)."""
    if form not in FORMS:
        raise ValueError(f"config.pack.form={form!r}; expected one of {FORMS}")
    if form == "auto":
        return "loop" if jax.default_backend() == "cpu" else "vmap"
    return form


def _recipe(config) -> dict:
    """The config without what packed runs may differ in: the seed and, in a later stage, the
    run's own earlier stage to start from (`model.init_checkpoint`)."""
    recipe = config.to_dict()
    recipe["seed"] = None
    recipe["model"] = dict(recipe["model"], init_checkpoint=None)
    return recipe


def _check_same_recipe(configs) -> None:
    """ValueError unless the configs differ in nothing but the seed (and init checkpoint)."""
    first = _recipe(configs[0])
    for other in configs[1:]:
        other = _recipe(other)
        if other != first:
            different = checkpointing.differences(first, other)
            raise ValueError(f"packed runs must differ only in seed; these differ: {different}")


def stack(trees: list) -> Any:
    """The trees with a new leading axis over them."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, k: int) -> Any:
    """Run k's part of a stacked tree (or of a list over the runs: the 'loop' form)."""
    if isinstance(tree, list):
        return tree[k]
    return jax.tree.map(lambda x: x[k], tree)


def train_and_evaluate(configs: list[ml_collections.ConfigDict], workdirs: list[str], *,
                       parts: parts_lib.Parts | None = None,
                       teachers: list[steps.Teacher] | None = None
                       ) -> list[tuple[dict[str, Any], Predictor] | faults.Diverged]:
    """Trains the runs `configs` (one recipe, one seed each) in `workdirs` as one program,
    resuming from their newest common checkpoint; returns, per run, (final metrics, its
    `Predictor`) or the `faults.Diverged` that stopped it.

    `parts` (of any of the configs) saves building them again; `teachers` (one per run, or
    None) are the distilling methods' teachers. Raises
    `faults.Preempted` (every run saved at the same step) and `faults.WorkdirBusy`.
    """
    if len(configs) != len(workdirs) or not configs:
        raise ValueError(f"{len(configs)} configs for {len(workdirs)} workdirs; expected one "
                         "workdir per config and at least one run")
    for config in configs:
        config_check.check(config)
    _check_same_recipe(configs)
    if parts is None:  # The seed builds no part: data, method and model agree.
        parts = parts_lib.build(configs[0])
    if parts.method.needs_teacher and not teachers:
        raise ValueError(f"method {parts.method.name!r} distils from a teacher, but none was "
                         "given (set config.teacher.workdir, or run it as a stage after its "
                         "teacher)")
    signals = faults.StopSignals()
    catch = signals if jax.process_count() == 1 else contextlib.nullcontext(signals)
    with contextlib.ExitStack() as locks, catch:
        for workdir in workdirs:
            files.makedirs(workdir)
            if jax.process_index() == 0:
                locks.enter_context(faults.WorkdirLock(workdir))
        return _Pack(configs, workdirs, parts, teachers, signals).train()


def _common_step(checkpointers, workdirs) -> int | None:
    """The newest checkpoint step every run has (None: none has any)."""
    kept = [set(c.all_steps()) for c in checkpointers]
    if not any(kept):
        return None
    common = set.intersection(*kept)
    if not common:
        listed = ", ".join(f"{w}: {sorted(k)}" for w, k in zip(workdirs, kept))
        raise ValueError(f"the packed runs have no checkpoint step in common ({listed}); "
                         "resume them one by one without packing, or use new workdirs")
    return max(common)


def _batch_augment(config, dataset):
    """The step's augmentation on device (`data.augment.on_device`), else None."""
    if not config.data.augment.get("on_device", False):
        return None
    return device_augment.make_batch_augment(config.data.augment, mean=dataset.mean,
                                             std=dataset.std)


def _make_feed(form: str, config, dataset, mesh):
    """(fn(host batches of the runs) -> the step's batches, the replicated training images
    the runs share when augmenting on device, else None)."""
    sharding = NamedSharding(mesh, P(None, "data"))
    to_global = steps.make_to_global(mesh)

    def feed(batches):
        if form == "loop":
            return [to_global(b) for b in batches]
        return {key: jax.make_array_from_process_local_data(
            sharding, np.stack([np.asarray(b[key]) for b in batches]))
            for key in batches[0]}

    if not config.data.augment.get("on_device", False):
        return feed, None
    return feed, trainer.device_images(dataset, mesh)


def _gather(form: str, trees: list):
    """The runs' trees as the packed step takes them: a list ('loop'), else stacked."""
    return list(trees) if form == "loop" else stack(trees)


def _packed_step(configs, parts, plan, mesh, form: str, teachers):
    """(the packed train step, the runs' step keys, their teachers' variables or None)."""
    config = configs[0]
    train_step = steps.make_packed_train_step(
        parts.model, parts.method, plan.tx, plan.learning_rate, mesh,
        form=form, mixup_alpha=config.mixup_alpha,
        mixup_epochs=None if config.mixup_epochs < 0 else config.mixup_epochs,
        steps_per_epoch=plan.steps_per_epoch,
        teacher=teachers[0] if teachers else None,
        batch_augment=_batch_augment(config, parts.dataset))
    teacher_variables = (None if not teachers else
                         _gather(form, [t.variables for t in teachers]))
    return train_step, _gather(form, [parts_lib.step_key(c) for c in configs]), teacher_variables


class _Pack:
    """The state of one packed training: per-run checkpointers, iterators, writers, checks."""

    def __init__(self, configs, workdirs, parts, teachers, signals):
        self.configs, self.workdirs, self.parts = configs, workdirs, parts
        self.teachers, self.signals = teachers, signals
        self.mesh = steps.make_mesh()
        self.plan = parts_lib.make_plan(configs[0], parts)
        checkpoint = configs[0].checkpoint
        self.checkpointers = [checkpointing.Checkpointer(w, max_to_keep=checkpoint.max_to_keep,
                                                         async_save=checkpoint.async_save)
                              for w in workdirs]
        self.form = resolve_form(configs[0].pack.form)
        self.predictor = Predictor(configs[0], parts.dataset, parts.method, parts.model, None, 0,
                                   self.mesh)
        self.iterators: list = []
        self.failed: dict[int, faults.Diverged] = {}

    def train(self):
        try:
            return self._train()
        except BaseException:
            for checkpointer in self.checkpointers:
                checkpointer.close_quietly()
            raise
        finally:
            for iterator in self.iterators:
                iterator.close()

    def _train(self):
        plan, config = self.plan, self.configs[0]
        states, step0 = self._restore()
        train_step, rngs, teacher_variables = _packed_step(
            self.configs, self.parts, self.plan, self.mesh, self.form, self.teachers)
        feed, source = _make_feed(self.form, config, self.parts.dataset, self.mesh)
        pending, self.start_time = [], time.perf_counter()
        for step in range(step0, plan.total_steps):
            batches = [next(it) for it in self.iterators]
            states, metrics = train_step(states, feed(batches), rngs, teacher_variables, source)
            pending.append((step + 1, metrics))
            last = step + 1 == plan.total_steps
            if (step + 1) % config.log_every_steps == 0 or last:
                self._each_run(lambda k, run_pending: trainer.log_metrics(
                    step + 1, self.finite[k](run_pending), self.writers[k], self.progress[k],
                    plan), pending)
                pending = []
            if trainer.crossed(step, plan.steps_per_epoch, config.eval.every_epochs) and not last:
                for k in self._alive():
                    trainer.periodic_eval(step + 1, self._predictor(states, k, step + 1),
                                          self.writers[k], plan)
            stop = trainer.stop_requested(step + 1, self.signals, self.checkpointers[0])
            if last or stop or trainer.crossed(step, plan.steps_per_epoch,
                                               config.checkpoint.every_epochs):
                self._each_run(lambda k, run_pending: self.finite[k](run_pending), pending)
                self._save(step + 1, states)
            if stop:
                self._preempted(stop, step + 1)
            for k in self._alive():
                self.checkpointers[k].check_for_errors()
                self.writers[k].flush()
            if not self._alive():
                break
        return self._final_reports(states)

    def _restore(self):
        """(the runs' states, gathered as the form takes them, the step to go on from): each run
        restored at the newest checkpoint step they all have, or initialised."""
        configs, plan, parts = self.configs, self.plan, self.parts
        start = _common_step(self.checkpointers, self.workdirs)
        states, self.seconds_before = [], []
        for config, workdir, checkpointer in zip(configs, self.workdirs, self.checkpointers):
            state, iterator, seconds = trainer.restore_or_init(
                config, workdir, parts, plan, self.mesh, checkpointer, step=start)
            states.append(state)
            self.iterators.append(iterator)
            self.seconds_before.append(seconds)
        step0 = 0 if start is None else start
        is_main = jax.process_index() == 0
        self.writers = [metric_writers.create_writer(w, process_index=jax.process_index(),
                                                     tensorboard=c.tensorboard, resume_step=step0)
                        for c, w in zip(configs, self.workdirs)]
        self.progress = [metric_writers.ProgressLine(plan.total_steps, c.batch_size,
                                                     enabled=is_main and k == 0)
                         for k, c in enumerate(configs)]
        for line in self.progress:
            line.start(step0)
        self.finite = [trainer.FiniteCheck(c) for c in self.checkpointers]
        trainer.announce(configs[0], parts, plan, step0, states[0].params)
        if is_main:
            print(f"Packed: {len(configs)} runs (seeds {[c.seed for c in configs]}), form "
                  f"{self.form!r}", flush=True)
        return _gather(self.form, states), step0

    def _predictor(self, states, k: int, step: int) -> Predictor:
        """Run k's model at `step`: the shared predictor (one compiled eval step) with its
        variables and config."""
        predictor = self.predictor.with_variables(trainer.variables_of(unstack(states, k)), step)
        predictor.config = self.configs[k]
        return predictor

    def _save(self, step: int, states) -> None:
        """A checkpoint of every live run at `step` in its own workdir."""
        for k in self._alive():
            config = self.configs[k]
            meta = {"fingerprint": parts_lib.fingerprint(config, self.parts),
                    "recipe": checkpointing.recipe_fingerprint(config), "seed": config.seed,
                    "train_seconds": self._seconds(k)}
            self.checkpointers[k].save(step, unstack(states, k), self.iterators[k].get_state(),
                                       meta, force=True)

    def _seconds(self, k: int) -> float:
        return self.seconds_before[k] + time.perf_counter() - self.start_time

    def _preempted(self, reason: str, step: int):
        for checkpointer in self.checkpointers:
            checkpointer.wait_until_finished()
        for writer in self.writers:
            writer.flush()
        raise faults.Preempted(
            f"{reason} at step {step} of {self.plan.total_steps}: checkpoints saved in "
            f"{', '.join(self.workdirs)}; rerun the same command to resume")

    def _final_reports(self, states) -> list:
        """Per run: (final metrics, its Predictor) after its final report, or its Diverged."""
        results: list = []
        for k, workdir in enumerate(self.workdirs):
            self.checkpointers[k].close()
            if k in self.failed:
                self.writers[k].close()
                results.append(self.failed[k])
                continue
            predictor = self._predictor(states, k, self.plan.total_steps)
            results.append((trainer.final_report(self.configs[k], workdir, predictor, self.plan,
                                                 self._seconds(k), self.writers[k]), predictor))
        return results

    def _alive(self) -> list[int]:
        return [k for k in range(len(self.configs)) if k not in self.failed]

    def _each_run(self, fn, pending) -> None:
        """fn(k, run k's pending [(step, metrics)]) for every live run; a run whose check
        raises `faults.Diverged` stops here, reported, and the others go on."""
        for k in self._alive():
            try:
                fn(k, [(step, unstack(m, k)) for step, m in pending])
            except faults.Diverged as err:
                self.failed[k] = err
                if jax.process_index() == 0:
                    print(f"ltx-train: error: {self.workdirs[k]}: {err} (the other packed runs "
                          "go on)", flush=True)
