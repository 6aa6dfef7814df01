"""What a config builds before anything trains: the data, the method, its model, the schedule.

Pure builders: nothing here compiles, trains or writes; `build` reads the dataset. The trainer,
the predictor, the stages, the stats tool and the experiments all build through here, so a
config means the same model and schedule everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from ltx import checkpointing, files, methods, optim
from ltx.data import datasets, pipeline


@dataclasses.dataclass(frozen=True)
class Parts:
    """The dataset, the method and its model of a config.

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
    return methods.build_with_model(config, class_counts)


def build(config: ml_collections.ConfigDict) -> Parts:
    """Reads the dataset of `config` and builds its method and model."""
    dataset = methods.dataset_view(config, datasets.build(config.data))
    method, model = build_method_and_model(config, dataset.class_counts)
    return Parts(dataset=dataset, method=method, model=model)


# What a workdir records of its training set, so that its model can be restored without it.
DATASET_FILE = "dataset.json"


def write_dataset_record(workdir: str, dataset) -> None:
    """Writes `<workdir>/dataset.json`: the dataset's name, number of classes and training
    counts [C] (of the view the method trains on)."""
    files.write_json(files.join(workdir, DATASET_FILE),
                     {"name": dataset.name, "num_classes": int(dataset.num_classes),
                      "class_counts": [int(n) for n in dataset.class_counts]})


def recorded_class_counts(workdir: str):
    """The training counts int [C] `<workdir>/dataset.json` records, or None without one."""
    path = files.join(workdir, DATASET_FILE)
    if not files.isfile(path):
        return None
    return np.asarray(files.read_json(path)["class_counts"], np.int64)


def build_without_images(config: ml_collections.ConfigDict, class_counts) -> Parts:
    """The parts of `config` for these training counts [C] without reading the dataset
    (`datasets.without_images`: no split), to restore or import a model and predict images of
    one's own. ValueError for a method that trains on its own view of the dataset (the
    class-balanced experts' reject class): its view needs the training labels."""
    if methods.hook(config.method.name, "dataset_view") is not None:
        raise ValueError(f"method {config.method.name!r} trains on its own view of the dataset "
                         f"(its training labels); it needs {config.data.name} on this machine")
    dataset = datasets.without_images(config.data, class_counts)
    method, model = build_method_and_model(config, dataset.class_counts)
    return Parts(dataset=dataset, method=method, model=model)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a config's run steps through its data: epochs cut into steps, the learning-rate
    schedule and the optimizer (`ltx.optim`) over the method's trainable parameters."""

    epochs: pipeline.Epochs
    total_steps: int
    learning_rate: optax.Schedule
    tx: optax.GradientTransformation

    @property
    def steps_per_epoch(self) -> float:
        return self.epochs.steps_per_epoch


def make_plan(config: ml_collections.ConfigDict, parts: Parts) -> Plan:
    """The `Plan` of `config` for the training split of `parts.dataset`."""
    train = parts.dataset.train  # None without images: the counts give its size.
    size = len(train) if train is not None else int(parts.dataset.class_counts.sum())
    epochs = pipeline.Epochs(size, config.batch_size,
                             config.data.get("last_batch", "pad"))
    learning_rate = optim.learning_rate_schedule(
        config.schedule, base_lr=optim.base_learning_rate(config.optimizer, config.batch_size),
        num_epochs=config.num_epochs, steps_per_epoch=epochs.steps_per_epoch)
    constraint = parts.method.update_constraint
    tx = optim.make_optimizer(config.optimizer, learning_rate, trainable=parts.method.trainable,
                              expert_lr_scales=parts.method.expert_lr_scales,
                              constraint=None if constraint is None else constraint(
                                  epochs.steps_per_epoch))
    return Plan(epochs=epochs, total_steps=epochs.total_steps(config.num_epochs),
                learning_rate=learning_rate, tx=tx)


def init_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The key of the model's initialisers.

    Initialisers draw from the 'rbg' PRNG: XLA:CPU needs minutes to compile threefry for the
    hundreds of initialisers of a multi-expert ResNet, seconds for rbg. Its bits come from XLA's
    RngBitGenerator, so initial weights depend on the backend (CPU/GPU/TPU) but not on the device
    count. Mixup, augmentation and data order keep threefry (`step_key`).
    """
    return jax.random.key(config.seed, impl="rbg")


def step_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The train step's base key; each step folds in its own step number."""
    return jax.random.fold_in(jax.random.key(config.seed), 1)


def fingerprint(config: ml_collections.ConfigDict, parts: Parts) -> str:
    """What a checkpoint of this config's model must match to be restored."""
    return checkpointing.config_fingerprint(config, parts.method.num_experts,
                                            parts.method.model_additions)
