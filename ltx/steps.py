"""The pure builders of training: the train state, the mesh, the train and eval steps.

The train step is a plain `jax.jit` function over a one-axis mesh of every device: the batch is
sharded on 'data', the state is replicated and donated. Nothing in the step knows how many devices
or hosts there are; BatchNorm statistics are therefore over the global batch (synchronised BN),
whereas the PyTorch references compute them per GPU under DataParallel (on one GPU, as for their
CIFAR runs, the two agree).

The mesh uses `AxisType.Auto` (classic GSPMD propagation) rather than the explicit-axes default of
`jax.make_mesh`: Flax Linen layers and the Mixup permutation are written for Auto semantics.
Losses and metrics avoid gathers on sharded arrays anyway, so they also run under Explicit axes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ltx import methods
from ltx.data import device_augment, mixup as mixup_lib
from ltx.outputs import model_outputs


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, replicated over the mesh."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


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


def replicate(tree, sharding: NamedSharding):
    """Host arrays (identical on every process) as global arrays with `sharding`."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree)


def make_init(model, tx: optax.GradientTransformation, image_shape,
              mesh: jax.sharding.Mesh) -> Callable[[jax.Array], TrainState]:
    """The jitted `init(rng) -> TrainState`: parameters, BatchNorm statistics and optimizer
    state, replicated. `jax.eval_shape(init, rng)` gives the state's shapes (traced once: the
    call after it reuses the trace)."""

    def init(rng):
        variables = model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                               train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params))

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def create_train_state(rng: jax.Array, model, tx: optax.GradientTransformation,
                       image_shape, mesh: jax.sharding.Mesh) -> TrainState:
    """Initialises parameters, BatchNorm statistics and optimizer state, replicated."""
    return make_init(model, tx, image_shape, mesh)(rng)


def compile_ahead(programs) -> list[Callable[[], None]]:
    """Starts compiling each (jitted function, example arguments) of `programs` in a thread of
    its own; returns one `ready()` per program, which blocks until it is compiled and raises
    its error. A function that is not jitted (no `lower`) is left to its first call.

    Example arguments are arrays or `jax.ShapeDtypeStruct`s with the shapes, dtypes and
    shardings of the later call, which then runs the compiled program without tracing again
    (jax.jit keeps what `lower(...).compile()` made), provided it comes after `ready()`: a call
    before it would trace and compile the program a second time. Tracing holds the GIL, but XLA
    compiles, and reads the persistent compilation cache, without it: on 2 CPU cores the default
    job's init, train step and eval step took 8.4 s compiled together against 11.1 s one after
    another (empty cache) and 3.0 s against 3.7 s (warm cache).
    """
    pool = concurrent.futures.ThreadPoolExecutor(max(len(programs), 1),
                                                 thread_name_prefix="ltx-compile")
    futures = [pool.submit(lambda fn=fn, args=args: fn.lower(*args).compile())
               if hasattr(fn, "lower") else None for fn, args in programs]
    pool.shutdown(wait=False)

    def ready(future) -> Callable[[], None]:
        def wait() -> None:
            if future is not None:
                future.result()  # Raises the compilation's error, if any.
        return wait

    return [ready(future) for future in futures]


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
    def from_predictor(cls, predictor) -> "Teacher":
        """The teacher of a restored or just trained model (`ltx.predictor.Predictor`)."""
        return cls(model=predictor.model, method=predictor.method,
                   variables=predictor.variables)


def epoch_of(step: jax.Array, steps_per_epoch: float) -> jax.Array:
    """int32: the 0-indexed epoch of a 0-indexed step, as the references' per-epoch schedules
    (DRW, Mixup's end, router switches) see it: floor(step / steps_per_epoch)."""
    return jnp.floor(step / steps_per_epoch).astype(jnp.int32)


def make_train_step(model, method: methods.Method, tx: optax.GradientTransformation,
                    learning_rate: optax.Schedule, mesh: jax.sharding.Mesh, **options):
    """The jitted train step `(state, batch, rng, teacher_variables) -> (state, metrics)` of
    `make_step_fn(model, method, tx, learning_rate, **options)`: the state replicated and
    donated, the batch sharded on 'data' (augmenting on device, each field as it comes)."""
    step_fn = make_step_fn(model, method, tx, learning_rate, **options)
    replicated = NamedSharding(mesh, P())
    # On device the batch mixes sharded and replicated fields: None keeps each one's layout.
    on_device = options.get("batch_augment") is not None
    batch_sharding = None if on_device else NamedSharding(mesh, P("data"))
    return jax.jit(step_fn, in_shardings=(replicated, batch_sharding, replicated, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_packed_train_step(model, method: methods.Method, tx: optax.GradientTransformation,
                           learning_rate: optax.Schedule, mesh: jax.sharding.Mesh, *,
                           form: str, **options):
    """One step of N runs of one recipe (`ltx.packed`):
    `(states, batches, rngs, teacher_variables, source) -> (states, metrics)`.

    `form` 'loop': `make_train_step`'s one compiled program applied to each run in turn; states,
    batches (each as `make_train_step` takes it, without 'source'), rngs, teacher variables (or
    None) and metrics are lists over the runs, and each run's arithmetic is bit for bit that of
    the run alone (CPU). 'scan' and 'vmap': one jitted program over stacked runs (every leaf
    with the runs on its leading axis: a stacked TrainState, batches [N, B, ...] sharded on
    'data' along B, keys [N], stacked teacher variables or None); 'scan' runs them one after
    another inside the program (`jax.lax.map`; XLA fuses the loop body differently from the
    step alone, so results agree to float rounding, not bit for bit; on XLA:CPU the loop body
    ran some 45x slower than the step alone, experiments/benchmark_packed.py), 'vmap' batches
    them into one wider program (accelerators, where one ResNet-32 step is too small to fill
    the device).
    `source` is the replicated uint8 training images [M, H, W, C] that the runs share
    (augmenting on device), or None.
    """
    if form == "loop":
        step = make_train_step(model, method, tx, learning_rate, mesh, **options)

        def looped(states, batches, rngs, teacher_variables, source):
            teachers = teacher_variables or [None] * len(states)
            results = [step(state, batch if source is None else dict(batch, source=source),
                            rng, teacher)
                       for state, batch, rng, teacher in zip(states, batches, rngs, teachers)]
            return [r[0] for r in results], [r[1] for r in results]
        return looped
    if form not in ("scan", "vmap"):
        raise ValueError(f"form={form!r}; expected 'loop', 'scan' or 'vmap'")
    step_fn = make_step_fn(model, method, tx, learning_rate, **options)

    def one_run(state, batch, rng, teacher_variables, source):
        if source is not None:
            batch = dict(batch, source=source)
        return step_fn(state, batch, rng, teacher_variables)

    def packed_fn(states, batches, rngs, teacher_variables, source):
        if form == "vmap":
            return jax.vmap(one_run, in_axes=(0, 0, 0, 0, None))(
                states, batches, rngs, teacher_variables, source)
        return jax.lax.map(lambda xs: one_run(*xs, source),
                           (states, batches, rngs, teacher_variables))

    replicated = NamedSharding(mesh, P())
    return jax.jit(packed_fn,
                   in_shardings=(replicated, NamedSharding(mesh, P(None, "data")), replicated,
                                 replicated, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_step_fn(model, method: methods.Method, tx: optax.GradientTransformation,
                 learning_rate: optax.Schedule, *, mixup_alpha: float = 0.0,
                 mixup_epochs: float | None = None, steps_per_epoch: float = 1.0,
                 teacher: Teacher | None = None,
                 batch_augment: device_augment.BatchAugment | None = None):
    """The pure train step `(state, batch, rng, teacher_variables) -> (state, metrics)`
    (`make_train_step` jits it over a mesh, `make_packed_train_step` packs several runs).

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
        images = _batch_images(batch, rng, batch_augment)
        if mixup_alpha > 0:
            images, labels_a, labels_b, lam = _mixup(rng, images, labels, mask, epoch,
                                                     mixup_alpha, mixup_epochs)
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
        metrics = _step_metrics(method.aggregate(outputs), labels, mask, loss, grads,
                                learning_rate(state.step))
        new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                               opt_state=opt_state)
        return new_state, metrics

    return step_fn


def _batch_images(batch, rng, batch_augment) -> jax.Array:
    """The step's images [B, H, W, C]: the batch's, or (augmentation on device) its indexed
    training images augmented with the step key's augmentation stream."""
    if batch_augment is None:
        return batch["image"]
    return batch_augment(jax.random.fold_in(rng, _AUGMENT_STREAM),
                         batch["source"][batch["index"]])


def _mixup(rng, images, labels, mask, epoch, alpha: float, epochs: float | None):
    """(images [B, ...], labels_a [B], labels_b [B], lam) of the step's Mixup draw; the batch
    unmixed (lam = 1) from epoch `epochs` on (None: never), in the same program."""
    mixed, labels_a, labels_b, lam = mixup_lib.mixup(rng, images, labels, alpha=alpha,
                                                     mask=mask)
    if epochs is not None:
        on = epoch < epochs
        mixed, lam = jnp.where(on, mixed, images), jnp.where(on, lam, 1.0)
    return mixed, labels_a, labels_b, lam


def _step_metrics(logits, labels, mask, loss, grads, lr) -> dict[str, jax.Array]:
    """A step's metrics: sums over the real rows of the global batch (logits [B, C], labels
    [B], mask bool [B] or None) with their count, the learning rate and the gradient norm."""
    hits = jnp.argmax(logits, -1) == labels
    if mask is None:
        count, correct = labels.shape[0], jnp.sum(hits)
    else:
        count, correct = jnp.sum(mask), jnp.sum(hits & mask)
    return {"loss_sum": loss * count, "correct": correct, "count": count, "lr": lr,
            "grad_norm": optax.tree.norm(grads)}


# Folded into a step's key for its augmentation draws; Mixup uses the step's key itself.
_AUGMENT_STREAM = 1


def make_eval_step(model, mesh: jax.sharding.Mesh):
    """The jitted eval step `(variables, batch) -> (outputs, mask, index)`.

    `variables` are {'params', 'batch_stats'}; `outputs` is the model's return value in float32:
    expert logits [E, B, C], or a dict with 'logits' and 'router' [B, K] for routed models.
    Outputs are replicated so every host can read the whole batch back.
    """

    def step_fn(variables, batch):
        outputs = model.apply(variables, batch["image"], train=False)
        return jax.tree.map(lambda x: x.astype(jnp.float32), outputs), batch["mask"], \
            batch["index"]

    replicated = NamedSharding(mesh, P())
    return jax.jit(step_fn, in_shardings=(replicated, NamedSharding(mesh, P("data"))),
                   out_shardings=replicated)


def with_variables(state: TrainState, params, batch_stats, tx: optax.GradientTransformation,
                   mesh: jax.sharding.Mesh) -> TrainState:
    """`state` with these host params and BatchNorm statistics (replicated over the mesh) and a
    fresh optimizer state for them: a model loaded from elsewhere, ready to train."""
    replicated = NamedSharding(mesh, P())
    params, batch_stats = replicate((params, batch_stats), replicated)
    opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
    return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)
