"""Config in, trained and evaluated model out: one trainer from a laptop CPU to a pod.

The train step is a plain `jax.jit` function over a one-axis mesh of every device: the batch is
sharded on 'data', the state is replicated and donated. Nothing in the step knows how many devices
or hosts there are; BatchNorm statistics are therefore over the global batch (synchronised BN),
whereas the PyTorch references compute them per GPU under DataParallel (on one GPU, as for their
CIFAR runs, the two agree).

The mesh uses `AxisType.Auto` (classic GSPMD propagation) rather than the explicit-axes default of
`jax.make_mesh`: Flax Linen layers and the Mixup permutation are written for Auto semantics.
Losses and metrics avoid gathers on sharded arrays anyway, so they also run under Explicit axes.

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

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ltx import (checkpointing, config_check, evaluation, faults, files, methods, metric_writers,
                 models, optim, provenance)
from ltx.data import datasets, device_augment, mixup as mixup_lib, pipeline
from ltx.outputs import Outputs, model_outputs


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, replicated over the mesh."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


# Distributions that give JAX an accelerator backend.
ACCELERATOR_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm60-plugin",
                       "jax-rocm7-plugin", "libtpu")


def accelerator_warning(installed=None, backend: str | None = None) -> str | None:
    """A warning when an accelerator plugin is installed but JAX runs on CPU (a driver or
    library mismatch makes JAX fall back silently); None otherwise. `installed` (names of
    installed distributions) and `backend` default to this environment's."""
    if installed is None:
        from importlib import metadata
        installed = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    found = sorted(set(ACCELERATOR_PLUGINS) & {name.lower() for name in installed})
    backend = jax.default_backend() if backend is None else backend
    if not found or backend != "cpu":
        return None
    return (f"{', '.join(found)} is installed but JAX runs on CPU, so the accelerator is "
            "unused; `python -c \"import jax; print(jax.devices())\"` shows JAX's reason "
            "(often a driver or CUDA version mismatch)")


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A one-axis ('data',) mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def make_to_global(mesh: jax.sharding.Mesh):
    """Returns `fn(local_batch) -> global batch` sharded on the leading axis over 'data'."""
    sharding = NamedSharding(mesh, P("data"))

    def to_global(batch):
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)

    return to_global


def _replicate(tree, sharding: NamedSharding):
    """Host arrays (identical on every process) as global arrays with `sharding`."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree)


def create_train_state(rng: jax.Array, model, tx: optax.GradientTransformation,
                       image_shape, mesh: jax.sharding.Mesh) -> TrainState:
    """Initialises parameters, BatchNorm statistics and optimizer state, replicated."""

    def init(rng):
        variables = model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                               train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params))

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))(rng)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A trained model whose ensemble prediction a distilling method learns from.

    `logits(variables, images) -> [B, C]` runs it in inference mode (BatchNorm running
    statistics) and aggregates its outputs with its own method; `variables` ({'params',
    'batch_stats'}, replicated) are an argument of the train step, so they are not baked into
    the compiled program as constants.
    """

    model: Any
    method: methods.Method
    variables: Any

    def logits(self, variables, images) -> jax.Array:
        outputs = model_outputs(self.model.apply(variables, images, train=False))
        return jax.lax.stop_gradient(self.method.aggregate(outputs, variables["params"]))

    @classmethod
    def from_run(cls, run: "Run", state: "TrainState") -> "Teacher":
        return cls(model=run.model, method=run.method,
                   variables={"params": state.params, "batch_stats": state.batch_stats})


def epoch_of(step: jax.Array, steps_per_epoch: float) -> jax.Array:
    """int32: the 0-indexed epoch of a 0-indexed step, as the references' per-epoch schedules
    (DRW, Mixup's end, router switches) see it: floor(step / steps_per_epoch)."""
    return jnp.floor(step / steps_per_epoch).astype(jnp.int32)


def make_train_step(model, method: methods.Method, tx: optax.GradientTransformation,
                    learning_rate: optax.Schedule, mesh: jax.sharding.Mesh, *,
                    mixup_alpha: float = 0.0, mixup_epochs: float | None = None,
                    steps_per_epoch: float = 1.0, teacher: Teacher | None = None,
                    batch_augment: device_augment.BatchAugment | None = None):
    """The jitted train step `(state, batch, rng, teacher_variables) -> (state, metrics)`.

    `batch` is {'image': float [B, H, W, C], 'label': int [B]} sharded on 'data', with 'mask'
    bool [B] when it may be padded (`data.last_batch='pad'`): padding rows then count in no loss,
    metric or BatchNorm statistic, so the step is that of the smaller batch. With
    `batch_augment` (augmentation on device) it is instead {'index': int [B] positions into
    'source', the replicated uint8 training images [N, H, W, C], 'label', 'mask'}, each field
    already laid out as it comes (`to_global` for the first, replicated 'source'); the step
    gathers the images and augments them with a key of its own step. `rng` is the
    run's base key; the step folds in its own step number, so a resumed run draws the same Mixup
    coefficients as an uninterrupted one. Mixup is on for epochs < `mixup_epochs` (None: all;
    a recipe may end with mixup-free epochs). `teacher_variables` are `teacher.variables` (None
    without a teacher); the teacher sees the same (mixed) images as the student. Metrics are
    sums over the global batch with a count.
    """
    if method.needs_teacher and teacher is None:
        raise ValueError(f"method {method.name!r} distils from a teacher, but none was given "
                         "(set config.teacher.workdir, or run it as a stage after its teacher)")

    def step_fn(state: TrainState, batch, rng, teacher_variables):
        rng = jax.random.fold_in(rng, state.step)
        epoch = epoch_of(state.step, steps_per_epoch)
        labels, mask = batch["label"], batch.get("mask")
        if batch_augment is None:
            images = batch["image"]
        else:
            images = batch_augment(jax.random.fold_in(rng, _AUGMENT_STREAM),
                                   batch["source"][batch["index"]])
        if mixup_alpha > 0:
            mixed, labels_a, labels_b, lam = mixup_lib.mixup(rng, images, labels,
                                                             alpha=mixup_alpha, mask=mask)
            if mixup_epochs is not None:
                # lam = 1 is the unmixed batch: one program for both phases.
                on = epoch < mixup_epochs
                mixed, lam = jnp.where(on, mixed, images), jnp.where(on, lam, 1.0)
            images = mixed
        teacher_logits = None if teacher is None else teacher.logits(teacher_variables, images)

        def loss_fn(params):
            raw, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                       images, train=True, mask=mask, mutable=["batch_stats"])
            outputs = model_outputs(raw, teacher_logits, mask)
            if mixup_alpha > 0:
                loss = mixup_lib.mixup_loss(lambda y: method.loss(outputs, y, epoch), labels_a,
                                            labels_b, lam)
            else:
                loss = method.loss(outputs, labels, epoch)
            # A frozen model (RIDE's router stage) writes no statistics.
            return loss, (outputs, updates.get("batch_stats", state.batch_stats))

        (loss, (outputs, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        hits = jnp.argmax(method.aggregate(outputs), -1) == labels
        if mask is None:
            count, correct = labels.shape[0], jnp.sum(hits)
        else:
            count, correct = jnp.sum(mask), jnp.sum(hits & mask)
        metrics = {"loss_sum": loss * count, "correct": correct, "count": count,
                   "lr": learning_rate(state.step), "grad_norm": optax.tree.norm(grads)}
        new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                               opt_state=opt_state)
        return new_state, metrics

    replicated = NamedSharding(mesh, P())
    # On device the batch mixes sharded and replicated fields: None keeps each one's layout.
    batch_sharding = NamedSharding(mesh, P("data")) if batch_augment is None else None
    return jax.jit(step_fn, in_shardings=(replicated, batch_sharding, replicated, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


# Folded into a step's key for its augmentation draws; Mixup uses the step's key itself.
_AUGMENT_STREAM = 1


def make_eval_step(model, mesh: jax.sharding.Mesh):
    """The jitted eval step `(state, batch) -> (outputs, mask, index)`.

    `outputs` is the model's return value in float32: expert logits [E, B, C], or a dict with
    'logits' and 'router' [B, K] for routed models. Outputs are replicated so every host can read
    the whole batch back.
    """

    def step_fn(state: TrainState, batch):
        outputs = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                              batch["image"], train=False)
        return jax.tree.map(lambda x: x.astype(jnp.float32), outputs), batch["mask"], \
            batch["index"]

    replicated = NamedSharding(mesh, P())
    return jax.jit(step_fn, in_shardings=(replicated, NamedSharding(mesh, P("data"))),
                   out_shardings=replicated)


def _crossed(step: int, steps_per_epoch: float, every: int) -> bool:
    """Whether finishing `step` (0-indexed) completes an epoch that is a multiple of `every`."""
    if every <= 0:
        return False
    before, after = math.floor(step / steps_per_epoch), math.floor((step + 1) / steps_per_epoch)
    return after > before and after % every == 0


def pretrained_variables(path: str, params, batch_stats) -> tuple[Any, Any, str]:
    """(params, batch_stats, summary) of a model initialised from `model.init_checkpoint`.

    `path` is an ltx workdir (or its checkpoints/ or checkpoints/<step> folder), whose variables
    are matched by name and shape (`checkpointing.transplant`: a one-expert checkpoint goes into
    every expert, a head of another shape keeps its initial value), or a PyTorch / safetensors /
    npz checkpoint file of a reference layout (`ltx.convert.layouts`: torchvision ResNets, the
    reference codes' multi-expert and CIFAR ResNets), converted without PyTorch.
    """
    if files.isfile(path):
        from ltx.convert import arrays, layouts
        state_dict = arrays.load_state_dict(path)
        variables, report = layouts.convert(
            state_dict.arrays, {"params": params, "batch_stats": batch_stats},
            keep_other_head=True)
        return variables["params"], variables.get("batch_stats", batch_stats), report.summary()
    source = checkpointing.load_pretrained(path)
    params, report = checkpointing.transplant(params, source["params"])
    if jax.tree.leaves(batch_stats) and jax.tree.leaves(source["batch_stats"]):
        batch_stats, _ = checkpointing.transplant(batch_stats, source["batch_stats"])
    kept = ", ".join(report["kept"][:4]) + (", ..." if len(report["kept"]) > 4 else "")
    return params, batch_stats, (f"{len(report['copied'])} parameters copied, "
                                 f"{len(report['broadcast'])} broadcast to every expert, "
                                 f"{len(report['kept'])} kept ({kept})")


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a config builds before any training: the dataset, the method and its model.

    `dataset` is the method's view of `config.data` (`ltx.methods.dataset_view`); `model` is the
    trunk of `config.model` with the method's additions (`Method.model`).
    """

    dataset: Any
    method: methods.Method
    model: Any


def build_method_and_model(config: ml_collections.ConfigDict, class_counts
                           ) -> tuple[methods.Method, Any]:
    """The method of `config.method` for these training counts [C] and its model (no data is
    read, nothing is compiled)."""
    method = methods.build(config.method, class_counts)
    trunk = models.build(config.model, num_classes=len(class_counts),
                         num_experts=method.num_experts)
    return method, method.model(trunk)


def build(config: ml_collections.ConfigDict) -> Parts:
    """Builds the dataset (reading it), the method and the model of `config`. The one place
    that does so: the trainer, the stages, the stats tool and the experiments all call it."""
    dataset = methods.dataset_view(config, datasets.build(config.data))
    method, model = build_method_and_model(config, dataset.class_counts)
    return Parts(dataset=dataset, method=method, model=model)


class Run:
    """A configured training run: its parts (`build`), optimizer, steps and the training loop.

    Build one from a config and call `train()`; the pieces are attributes so a notebook can
    inspect them or call `evaluate()` on a restored state. A method that distils needs a
    `teacher` to train, not to be restored or evaluated.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
                 parts: Parts | None = None, teacher: Teacher | None = None):
        config_check.check(config)  # Once per config in a process (the entry point's call).
        self.config = config
        self.workdir = workdir
        self.teacher = teacher
        self.state: TrainState | None = None
        parts = build(config) if parts is None else parts
        self.dataset, self.method, self.model = parts.dataset, parts.method, parts.model
        self.mesh = make_mesh()
        self.to_global = make_to_global(self.mesh)
        self.sharding = pipeline.Sharding(jax.process_index(), jax.process_count())
        self.epochs = pipeline.Epochs(len(self.dataset.train), config.batch_size,
                                      config.data.get("last_batch", "pad"))
        self.steps_per_epoch = self.epochs.steps_per_epoch
        self.total_steps = self.epochs.total_steps(config.num_epochs)
        self.learning_rate = optim.learning_rate_schedule(
            config.schedule, base_lr=optim.base_learning_rate(config.optimizer, config.batch_size),
            num_epochs=config.num_epochs,
            steps_per_epoch=self.steps_per_epoch)
        self.tx = optim.make_optimizer(config.optimizer, self.learning_rate,
                                       trainable=self.method.trainable,
                                       expert_lr_scales=self.method.expert_lr_scales)
        self.eval_step = make_eval_step(self.model, self.mesh)
        self.fingerprint = checkpointing.config_fingerprint(config, self.method.num_experts,
                                                            self.method.model_additions)
        self.recipe = checkpointing.recipe_fingerprint(config)
        # Initialisers draw from the 'rbg' PRNG: XLA:CPU needs minutes to compile threefry for
        # the hundreds of initialisers of a multi-expert ResNet, seconds for rbg. Its bits come
        # from XLA's RngBitGenerator, so initial weights depend on the backend (CPU/GPU/TPU) but
        # not on the device count. Mixup and data order keep threefry.
        self.init_rng = jax.random.key(config.seed, impl="rbg")
        self.step_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
        self._train_step = None
        self._forward = None
        self.on_device = bool(config.data.augment.get("on_device", False))
        self._device_images = None

    # -- pieces ---------------------------------------------------------------------------

    @property
    def train_step(self):
        """The jitted train step (`make_train_step`), built on first use: it needs the teacher
        of a distilling method, which restoring or evaluating a run does not."""
        if self._train_step is None:
            mixup_epochs = self.config.mixup_epochs
            self._train_step = make_train_step(
                self.model, self.method, self.tx, self.learning_rate, self.mesh,
                mixup_alpha=self.config.mixup_alpha,
                mixup_epochs=None if mixup_epochs < 0 else mixup_epochs,
                steps_per_epoch=self.steps_per_epoch, teacher=self.teacher,
                **self._device_step_arguments())
        return self._train_step

    def _device_step_arguments(self) -> dict[str, Any]:
        if not self.on_device:
            return {}
        return {"batch_augment": device_augment.make_batch_augment(
                    self.config.data.augment, mean=self.dataset.mean, std=self.dataset.std)}

    @property
    def device_images(self) -> jax.Array:
        """The training images, uint8 [N, H, W, C] in split order, replicated on every device
        (augmentation on device)."""
        if self._device_images is None:
            split = self.dataset.train
            records = [split.source[int(i)] for i in split.indices]
            labels = np.asarray([r["label"] for r in records])
            if not np.array_equal(labels, np.asarray(split.labels)):
                raise ValueError("the training split's labels differ from its records' labels; "
                                 "data.augment.on_device needs them equal")
            images = np.stack([r["image"] for r in records])
            self._device_images = _replicate(images, NamedSharding(self.mesh, P()))
        return self._device_images

    def train_batch(self, host_batch: dict) -> dict:
        """This process's batch from `train_data()` as the train step's global batch (with the
        device images under 'source' when augmenting on device)."""
        batch = self.to_global(host_batch)
        if self.on_device:
            batch["source"] = self.device_images
        return batch

    @train_step.setter
    def train_step(self, step_fn) -> None:
        """Replaces the train step (tests wrap it to stop a run mid-way)."""
        self._train_step = step_fn

    def initial_state(self, *, pretrained: bool = True) -> TrainState:
        """Freshly initialised state; with `pretrained`, `model.init_checkpoint` loaded into it."""
        state = create_train_state(self.init_rng, self.model, self.tx,
                                   self.dataset.image_shape, self.mesh)
        path = self.config.model.get("init_checkpoint", "")
        if not (pretrained and path):
            return state
        params, batch_stats, summary = pretrained_variables(
            path, jax.device_get(state.params), jax.device_get(state.batch_stats))
        if jax.process_index() == 0:
            print(f"Initialised from {path}: {summary}", flush=True)
        return self.with_variables(state, params, batch_stats)

    def with_variables(self, state: TrainState, params, batch_stats) -> TrainState:
        """`state` with these host params and BatchNorm statistics (replicated over the mesh)
        and a fresh optimizer state for them: a model loaded from elsewhere, ready to train."""
        replicated = NamedSharding(self.mesh, P())
        params, batch_stats = _replicate((params, batch_stats), replicated)
        opt_state = jax.jit(self.tx.init, out_shardings=replicated)(params)
        return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)

    def train_data(self) -> pipeline.grain.MapDataset:
        cfg = self.config
        if self.on_device:
            return pipeline.train_index_dataset(
                self.dataset.train, global_batch_size=cfg.batch_size, seed=cfg.seed,
                sharding=self.sharding, sampler=cfg.data.sampler,
                last_batch=self.epochs.last_batch)
        return pipeline.train_dataset(
            self.dataset.train, global_batch_size=cfg.batch_size, seed=cfg.seed,
            mean=self.dataset.mean, std=self.dataset.std,
            transform=pipeline.make_transform(cfg.data.augment), sharding=self.sharding,
            sampler=cfg.data.sampler, last_batch=self.epochs.last_batch)

    def predict(self, state: TrainState, split_name="test") -> tuple[Outputs, np.ndarray]:
        """(outputs, labels [N]) of `state` on 'test', 'val' or a Split: `Outputs` of host
        arrays, expert logits float32 [E, N, C] and, for routed models, router [N, K]."""
        split = split_name
        if isinstance(split_name, str):
            split = getattr(self.dataset, split_name)
            if split is None:
                raise ValueError(f"dataset {self.dataset.name} has no {split_name!r} split")
        return evaluation.predict_split(
            self.eval_step, state, split, batch_size=self.config.eval.batch_size,
            mean=self.dataset.mean, std=self.dataset.std, to_global=self.to_global,
            sharding=self.sharding, transform=self.dataset.eval_transform)

    def forward(self, state: TrainState, images) -> Outputs:
        """`Outputs` (host float32 arrays) of the model on normalised images [N, H, W, C]."""
        if self._forward is None:
            model = self.model

            def forward(variables, images):
                return jax.tree.map(lambda x: x.astype(jnp.float32),
                                    model.apply(variables, images, train=False))

            self._forward = jax.jit(forward)
        raw = self._forward({"params": state.params, "batch_stats": state.batch_stats},
                            jnp.asarray(images, jnp.float32))
        return model_outputs(jax.tree.map(np.asarray, raw))

    def aggregate(self, state: TrainState, outputs: Outputs) -> np.ndarray:
        """The ensemble's logits [N, C] of predicted `outputs` (`predict`), float32."""
        outputs = jax.tree.map(jnp.asarray, outputs)
        return np.asarray(self.method.aggregate(outputs, jax.device_get(state.params)),
                          np.float32)

    def evaluate(self, state: TrainState, split_name: str = "test") -> dict[str, float]:
        """The metric report of `state` on 'test' or 'val' (see `evaluation.metric_report`),
        with the method's evaluators' numbers."""
        outputs, labels = self.predict(state, split_name)
        logits = self.aggregate(state, outputs)
        if self.config.eval.posthoc_test_prior:
            if self.method.correct_prior is None:
                raise ValueError(f"eval.posthoc_test_prior=True, but method "
                                 f"{self.method.name!r} has no test-prior correction")
            # BalPoE's oracle correction: the test loader's empirical class frequencies.
            test_prior = np.bincount(labels, minlength=self.dataset.num_classes) / len(labels)
            logits = np.asarray(self.method.correct_prior(jnp.asarray(logits), test_prior))
        report = evaluation.metric_report(
            outputs.logits, logits, labels, self.dataset.class_counts,
            shot_convention=self.config.eval.shot_convention,
            num_bins=self.config.eval.num_bins)
        report.update(self.method.evaluate(outputs, labels, self.dataset, self.config))
        return report

    def restore(self, step: int | None = None) -> TrainState:
        """Loads the checkpoint at `step` (default: the latest) of the workdir into `self.state`.

        Raises FileNotFoundError when the workdir has no checkpoint and
        `checkpointing.CheckpointMismatchError` when it was written by another model.
        """
        if not files.isdir(files.join(self.workdir, "checkpoints")):
            raise FileNotFoundError(f"no checkpoints/ directory in {self.workdir}")
        checkpointer = checkpointing.Checkpointer(self.workdir, async_save=False)
        try:
            self.state, _, _ = checkpointer.restore(self.initial_state(pretrained=False),
                                                    {"fingerprint": self.fingerprint}, step=step)
        except checkpointing.CheckpointDamagedError as err:
            others = [s for s in checkpointer.all_steps() if s != (step or
                                                                    checkpointer.latest_step())]
            raise checkpointing.CheckpointDamagedError(
                f"{err}. " + (f"Other checkpoints: steps {others} (pass --step=N to use one; "
                              "rerunning the training command resumes from the newest intact "
                              "one)" if others else "No other checkpoint is kept.")) from err
        finally:
            checkpointer.close()
        return self.state

    # -- the loop -------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Trains (resuming from the workdir's newest intact checkpoint) and returns the final
        metrics.

        Stops with `faults.Diverged` at a non-finite loss or gradient (nothing is saved from that
        state; the last good checkpoint stays), with `faults.Preempted` after SIGTERM/SIGINT
        (a checkpoint of the current step saved first), and with `faults.WorkdirBusy` when
        another process trains in the workdir.
        """
        cfg, is_main = self.config, jax.process_index() == 0
        if self.method.needs_teacher and self.teacher is None:
            raise ValueError(f"method {self.method.name!r} distils from a teacher, but none was "
                             "given (set config.teacher.workdir, or run it as a stage after its "
                             "teacher)")
        files.makedirs(self.workdir)
        lock = faults.WorkdirLock(self.workdir) if is_main else contextlib.nullcontext()
        # Under jax.distributed, SIGTERM belongs to JAX's preemption notifier (behind orbax's
        # sync point); a Python handler would replace it.
        signals = faults.StopSignals()
        catch = signals if jax.process_count() == 1 else contextlib.nullcontext(signals)
        with lock, catch:
            return self._train(signals)

    def _train(self, signals: faults.StopSignals) -> dict[str, Any]:
        cfg, is_main = self.config, jax.process_index() == 0
        checkpointer = checkpointing.Checkpointer(self.workdir,
                                                  max_to_keep=cfg.checkpoint.max_to_keep,
                                                  async_save=cfg.checkpoint.async_save)
        try:
            state, iterator, seconds_before = self._start(checkpointer)
            start_step = int(state.step)
            writer = metric_writers.create_writer(
                self.workdir, process_index=jax.process_index(), tensorboard=cfg.tensorboard,
                resume_step=start_step)
            if is_main and start_step == 0:
                print(self.describe(), flush=True)
            warning = accelerator_warning()
            if is_main and warning:
                print(f"Warning: {warning}", flush=True)
            progress = metric_writers.ProgressLine(self.total_steps, cfg.batch_size,
                                                   enabled=is_main)
            progress.start(start_step)
            self._last_finite = None
            pending, start_time = [], time.perf_counter()
            teacher_variables = None if self.teacher is None else self.teacher.variables
            meta = {"fingerprint": self.fingerprint, "recipe": self.recipe, "seed": cfg.seed}

            def elapsed() -> float:
                return seconds_before + time.perf_counter() - start_time

            for step in range(start_step, self.total_steps):
                batch = self.train_batch(next(iterator))
                state, step_metrics = self.train_step(state, batch, self.step_rng,
                                                      teacher_variables)
                pending.append((step + 1, step_metrics))
                last = step + 1 == self.total_steps
                if (step + 1) % cfg.log_every_steps == 0 or last:
                    self._log(step + 1, pending, writer, progress, checkpointer)
                    pending = []
                if _crossed(step, self.steps_per_epoch, cfg.eval.every_epochs) and not last:
                    self._periodic_eval(step + 1, state, writer)
                stop = self._stop_requested(step + 1, signals, checkpointer)
                if self._should_save(step, last) or stop:
                    self._check_finite(pending, checkpointer)  # Never save a diverged state.
                    checkpointer.save(step + 1, state, iterator.get_state(),
                                      dict(meta, train_seconds=elapsed()), force=True)
                if stop:
                    checkpointer.wait_until_finished()
                    writer.flush()
                    raise faults.Preempted(
                        f"{stop} at step {step + 1} of {self.total_steps}: checkpoint saved in "
                        f"{checkpointer.directory}; rerun the same command to resume")
                checkpointer.check_for_errors()
                writer.flush()
        except BaseException:
            checkpointer.close_quietly()
            raise
        checkpointer.close()
        self.state = state
        return self._final_report(state, elapsed(), writer)

    def _start(self, checkpointer) -> tuple[TrainState, Any, float]:
        """(state, data iterator, train seconds so far) to train from: the newest intact
        checkpoint's, else fresh ones (with `model.init_checkpoint` loaded). Writes config.json
        for a fresh run, `config.<step>.json` for a resume whose config changed, and the launch
        record (`ltx.provenance`)."""
        latest = checkpointer.latest_step()
        state = self.initial_state(pretrained=latest is None)
        iterator = pipeline.train_iterator(self.train_data(),
                                           num_workers=self.config.data.num_workers)
        seconds = 0.0
        if latest is not None:
            may_differ = ("recipe",) if self.config.checkpoint.allow_config_change else ()
            state, data_state, saved = checkpointer.restore_intact(
                state, {"fingerprint": self.fingerprint, "recipe": self.recipe},
                may_differ=may_differ)
            iterator.set_state(data_state)
            seconds = float(saved.get("train_seconds", 0.0))
            if jax.process_index() == 0:
                print(f"Resumed from step {int(state.step)} in {checkpointer.directory}",
                      flush=True)
        if jax.process_index() == 0:
            self._write_config(int(state.step))
        return state, iterator, seconds

    def _write_config(self, step: int) -> None:
        text = self.config.to_json_best_effort(indent=2)
        path = files.join(self.workdir, "config.json")
        written = None
        if step == 0 or not files.isfile(path):
            written = path
        elif files.read_text(path) != text:
            written = files.join(self.workdir, f"config.{step}.json")
        if written is not None:
            files.write_text(written, text)
        provenance.record_launch(self.workdir, step=step,
                                 config_file=None if written is None
                                 else files.basename(written))

    def _should_save(self, step: int, last: bool) -> bool:
        return last or _crossed(step, self.steps_per_epoch, self.config.checkpoint.every_epochs)

    def _stop_requested(self, done: int, signals: faults.StopSignals, checkpointer) -> str | None:
        """The reason to stop after step `done`: ltx's signal flag on one process, orbax's
        preemption sync point (the same step on every host) under jax.distributed."""
        if jax.process_count() == 1:
            return signals.requested
        return "preemption" if checkpointer.reached_preemption(done) else None

    def _check_finite(self, pending: list, checkpointer) -> float | None:
        """Raises faults.Diverged at the first step of `pending` [(step, metrics)] whose loss or
        gradient norm is not finite; returns the last loss."""
        loss = None
        for step, m in jax.device_get(pending):
            loss = float(m["loss_sum"]) / max(float(m["count"]), 1.0)
            if not (math.isfinite(loss) and math.isfinite(float(m["grad_norm"]))):
                last = ("no finite loss yet" if self._last_finite is None else
                        "last finite loss {1:.4g} at step {0}".format(*self._last_finite))
                kept = checkpointer.latest_step()
                raise faults.Diverged(
                    f"training diverged: the loss is {loss} and the gradient norm "
                    f"{float(m['grad_norm'])} at step {step} ({last}), learning rate "
                    f"{float(m['lr']):.4g}. Nothing was saved from it; "
                    + (f"the last good checkpoint is step {kept} in {checkpointer.directory}."
                       if kept is not None else "no checkpoint had been written.")
                    + " Lower optimizer.lr or check the data.")
            self._last_finite = (step, loss)
        return loss

    def _log(self, step: int, pending: list, writer, progress, checkpointer) -> None:
        """Checks the steps since the last log point for divergence and writes their mean
        loss, train top-1, lr and gradient norm."""
        self._check_finite(pending, checkpointer)
        fetched = [m for _, m in jax.device_get(pending)]
        count = sum(float(m["count"]) for m in fetched)
        scalars = {"loss": sum(float(m["loss_sum"]) for m in fetched) / count,
                   "train_top1": 100.0 * sum(float(m["correct"]) for m in fetched) / count,
                   "lr": float(fetched[-1]["lr"]),
                   "grad_norm": float(np.mean([float(m["grad_norm"]) for m in fetched]))}
        scalars["img_per_s"] = progress.update(step, step / self.steps_per_epoch, scalars)
        writer.write_scalars(step, scalars)

    def _periodic_eval(self, step: int, state: TrainState, writer) -> None:
        """Evaluates on val (test without a val split) and logs the headline numbers."""
        split = "val" if self.dataset.val is not None else "test"
        report = self.evaluate(state, split)
        writer.write_scalars(step, {f"{split}/{k}": v for k, v in report.items()})
        if jax.process_index() == 0:
            print(f"  {split} @ epoch {round(step / self.steps_per_epoch)}: "
                  f"top1 {report['top1_all']:.2f} (many {report['top1_many']:.2f}, "
                  f"medium {report['top1_medium']:.2f}, few {report['top1_few']:.2f}), "
                  f"ece {report['ece']:.2f}", flush=True)

    def _final_report(self, state: TrainState, wall: float, writer) -> dict[str, Any]:
        """Evaluates test (and val), writes final_metrics.json and prints the table."""
        cfg = self.config
        rows = {"test": self.evaluate(state, "test")}
        if self.dataset.val is not None:
            rows["val"] = self.evaluate(state, "val")
        final = dict(rows["test"])
        final.update({f"val_{k}": v for k, v in rows.get("val", {}).items()})
        final.update({"seed": cfg.seed, "steps": int(state.step),
                      "epochs": cfg.num_epochs, "train_seconds": wall,
                      "dataset": self.dataset.name, "method": self.method.name,
                      "num_experts": self.method.num_experts,
                      "shot_convention": cfg.eval.shot_convention})
        writer.write_scalars(int(state.step), {f"final/{k}": v for k, v in rows["test"].items()})
        writer.close()
        if jax.process_index() == 0:
            files.write_json(files.join(self.workdir, "final_metrics.json"), final)
            print(f"\nFinished {self.total_steps} steps ({cfg.num_epochs} epochs) in "
                  f"{wall:.1f}s; metrics in {self.workdir}/final_metrics.json")
            print(evaluation.format_table(rows), flush=True)
        return final

    def describe(self) -> str:
        d = self.dataset
        params = sum(x.size for x in jax.tree.leaves(
            jax.eval_shape(lambda: self.initial_state(pretrained=False).params)))
        return (f"{d.name}: {len(d.train)} train images over {d.num_classes} classes "
                f"(head {int(d.class_counts.max())}, tail {int(d.class_counts.min())}), "
                f"{len(d.test)} test | {self.method.name} with {self.method.num_experts} "
                f"expert(s), {params / 1e6:.3f} M parameters | {self.total_steps} steps of "
                f"{self.config.batch_size} on {jax.device_count()} {jax.default_backend()} "
                f"device(s)")
