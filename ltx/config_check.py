"""Every check of a config that needs no data, run before any device, dataset or model work.

`problems(config)` lists what is wrong with a config, every problem at once, each naming the
config key, the bad value and what is expected; `check(config)` raises `ConfigError` with all of
them. Two tiers:

- the static tier reads only the config (types, ranges, names of methods / datasets / heads /
  samplers / shot conventions / augmentations / schedules, lengths, stage structure, paths that
  must exist). It imports no JAX computation, so `ltx.train` runs it before
  `jax.distributed.initialize()`, which must precede any;
- the build tier (`built=True`, only when the static tier passed) builds, without reading any
  data, what the run would build: the method on stand-in class counts (its own checks: lambdas vs
  experts, loss options), the model module, the learning-rate schedule, and checks the batch
  sizes against the device count.

A multi-stage config is checked stage by stage (`config.stages.<name>` merged into the config,
`ltx.config_lib.stage_configs`), each problem prefixed with its stage.

Each tier runs once per distinct (stage) config in a process: a config that passed is
remembered (by its JSON, and the device count for the build tier), so the entry point
(`ltx.train`), the stages and each run can all ask `check` and a launch validates once.
"""

from __future__ import annotations

import importlib.util
import math
import numbers

import ml_collections

from ltx import config_lib, files


class ConfigError(ValueError):
    """A config with one or more bad values; `problems` lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the config:\n{lines}")


def check(config: ml_collections.ConfigDict, *, built: bool = True) -> None:
    """Raises `ConfigError` listing every problem of `config` (see `problems`)."""
    found = problems(config, built=built)
    if found:
        raise ConfigError(found)


def problems(config: ml_collections.ConfigDict, *, built: bool = True) -> list[str]:
    """Every problem of `config` and of each of its stages; [] for a good config."""
    try:
        staged = config_lib.stage_configs(config)
    except ValueError as err:
        return [str(err)]
    found = []
    if staged:
        found += _finish_problems(config)
        runs = [(f"stage {name!r}: ", stage_config) for name, stage_config, _ in staged]
    else:
        runs = [("", config)]
    for prefix, run_config in runs:
        found += [prefix + p for p in _once("static", run_config, _static_problems)]
    if built and not found:
        for prefix, run_config in runs:
            found += [prefix + p for p in _once("built", run_config, _built_problems)]
    return found


# (tier, config JSON[, device count]) of the configs that passed a tier in this process.
_PASSED: set[tuple] = set()


def _once(tier: str, run_config, check_fn) -> list[str]:
    """`check_fn(run_config)`, unless this config already passed this tier here."""
    key = (tier, run_config.to_json_best_effort(sort_keys=True))
    if tier == "built":
        import jax
        key += (jax.device_count(),)
    if key in _PASSED:
        return []
    found = check_fn(run_config)
    if not found:
        _PASSED.add(key)
    return found


# -- the static tier --------------------------------------------------------------------------

class _Checker:
    """Collects problems of one config, each naming its dotted key."""

    def __init__(self, config):
        self.config = config
        self.found: list[str] = []

    def get(self, key: str):
        node = self.config
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                return _MISSING
            node = node[part]
        return node

    def bad(self, key: str, value, expected: str) -> None:
        self.found.append(f"config.{key}={value!r}; expected {expected}")

    def number(self, key: str, *, integer: bool = False, low=None, high=None,
               low_open: bool = False, high_open: bool = False, required: bool = True):
        """Checks that `key` is a (finite) number in the given range; returns it or None."""
        value = self.get(key)
        if value is _MISSING:
            if required:
                self.found.append(f"config.{key} is missing")
            return None
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or (
                not integer and not math.isfinite(value)):
            self.bad(key, value, "an integer" if integer else "a finite number")
            return None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            left = "" if low is None else f"{'>' if low_open else '>='} {low}"
            right = "" if high is None else f"{'<' if high_open else '<='} {high}"
            self.bad(key, value, " and ".join(x for x in (left, right) if x))
            return None
        return value

    def choice(self, key: str, options, *, required: bool = True):
        value = self.get(key)
        if value is _MISSING:
            if required:
                self.found.append(f"config.{key} is missing")
            return None
        if value not in tuple(options):
            self.bad(key, value, f"one of {sorted(options)}")
            return None
        return value

    def boolean(self, key: str) -> None:
        value = self.get(key)
        if value is not _MISSING and not isinstance(value, bool):
            self.bad(key, value, "True or False")

    def existing_path(self, key: str, *, directory: bool, what: str) -> None:
        value = self.get(key)
        if value is _MISSING or not value:
            return
        path = str(value)  # A local path (`~` expanded) or a URL such as gs://bucket/x.
        ok = files.isdir(path) if directory else files.exists(path)
        if not ok:
            self.bad(key, value, f"{what} that exists")


_MISSING = object()


def _static_problems(config) -> list[str]:
    # Imports here: pure-Python registries (no JAX computation at import).
    from ltx import methods, models, optim
    from ltx.data import datasets, device_augment, long_tail, pipeline, shots

    c = _Checker(config)
    c.number("seed", integer=True)
    epochs = c.number("num_epochs", low=0, low_open=True)
    c.number("batch_size", integer=True, low=1)
    c.number("mixup_alpha", low=0)
    c.number("mixup_epochs", low=-1)
    c.number("log_every_steps", integer=True, low=1)
    for key in ("tensorboard", "distributed", "eval.posthoc_test_prior", "checkpoint.async_save",
                "data.augment.flip", "data.augment.on_device"):
        c.boolean(key)

    c.choice("pack.form", ("auto", "scan", "vmap"), required=False)
    seeds = c.get("pack.seeds")
    if seeds not in (_MISSING, None) and (
            not isinstance(seeds, (tuple, list)) or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        c.bad("pack.seeds", seeds, "distinct integer seeds, e.g. (1, 2, 3)")

    if c.get("tensorboard") is True and importlib.util.find_spec("tensorboardX") is None:
        c.found.append("config.tensorboard=True needs tensorboardX, which is not installed: "
                       "pip install -e '.[tensorboard]'")

    # data
    name = c.choice("data.name", datasets.NAMES)
    source = c.choice("data.source", datasets.SOURCES, required=False)
    tfds = source == "tfds"
    if source == "records":
        if importlib.util.find_spec("array_record") is None:
            c.found.append("config.data.source='records' needs array_record, which is not "
                           "installed: pip install -e '.[records]'")
        if name is not None and c.get("data.records_dir") is _MISSING:
            c.found.append(f"config.data.source='records' is for the list-file datasets; "
                           f"{name!r} has no data.records_dir")
        elif not c.get("data.records_dir"):
            c.found.append("config.data.records_dir is empty; expected the folder "
                           "`ltx-prepare records` wrote")
        c.existing_path("data.records_dir", directory=True, what="a folder")
    if tfds:
        if importlib.util.find_spec("tensorflow_datasets") is None:
            c.found.append("config.data.source='tfds' needs tensorflow-datasets, which is not "
                           "installed: pip install -e '.[tfds]' (TensorFlow is not needed)")
        c.existing_path("data.tfds_data_dir", directory=True, what="a TFDS data directory")
        if name == "list_files" and not c.get("data.tfds_name"):
            c.found.append("config.data.tfds_name is empty; a custom dataset read from TFDS "
                           "needs the TFDS dataset's name (e.g. 'food101')")
    c.number("data.num_workers", integer=True, low=-1)
    c.choice("data.sampler", pipeline.SAMPLERS)
    c.choice("data.last_batch", pipeline.LAST_BATCH, required=False)
    kind = c.choice("data.augment.kind", ("cifar", "imagenet"))
    if name in device_augment.IN_MEMORY_DATASETS:
        c.number("data.imbalance_ratio", low=1)
        c.choice("data.profile", long_tail.PROFILES)
        c.number("data.subset_seed", integer=True)
        c.existing_path("data.data_dir", directory=True, what="a data directory")
        if kind == "cifar":
            c.number("data.augment.crop_padding", integer=True, low=0)
            c.number("data.augment.rotation", low=0)
            c.boolean("data.augment.autoaugment")
    elif name is not None:  # The list-file datasets.
        if kind != "imagenet" and kind is not None:
            c.bad("data.augment.kind", kind, f"'imagenet' for {name} (images of every size)")
        root = c.get("data.root")
        if not root and source not in ("tfds", "records"):
            c.found.append(f"config.data.root is empty; expected the image root of {name} "
                           "(the folder the list files' paths are relative to)")
        c.existing_path("data.root", directory=True, what="a folder")
        c.existing_path("data.list_dir", directory=True, what="a folder")
        if name == "list_files":
            classes = c.get("data.num_classes")
            if classes != 0:  # 0: from classes.txt or the training list.
                c.number("data.num_classes", integer=True, low=2)
            c.number("data.imbalance_ratio", low=1)
            c.choice("data.profile", long_tail.PROFILES)
            c.number("data.subset_seed", integer=True)
        if kind == "imagenet":
            c.number("data.augment.crop_size", integer=True, low=1)
            c.number("data.augment.eval_resize", integer=True, low=1)
    if name is not None and c.get("data.augment.on_device") is True:
        c.found.extend(device_augment.unsupported(config.data.augment, name))

    # model
    arch = c.choice("model.name", models.ARCHITECTURES)
    widths = c.get("model.widths")
    stages = 3 if arch == "resnet32" else 4
    if widths is not _MISSING and arch is not None:
        if (not isinstance(widths, (tuple, list)) or len(widths) != stages
                or not all(isinstance(w, int) and w > 0 for w in widths)):
            c.bad("model.widths", widths, f"{stages} positive stage widths for {arch}")
    if arch == "resnet32":
        c.number("model.blocks_per_stage", integer=True, low=1)
        strides = c.get("model.strides")
        if strides is not _MISSING and (not isinstance(strides, (tuple, list))
                                        or len(strides) != 3):
            c.bad("model.strides", strides, "3 stage strides")
    c.number("model.num_shared_stages", integer=True, low=0, high=stages)
    c.choice("model.head", models.HEAD_KINDS)
    c.number("model.cosine_scale", low=0, low_open=True)
    c.choice("model.expert_strategy", models.EXPERT_STRATEGIES)
    c.choice("model.bn_running_var", models.BN_RUNNING_VARS, required=False)
    c.choice("model.dtype", models.COMPUTE_DTYPES, required=False)
    c.existing_path("model.init_checkpoint", directory=False,
                    what="an ltx workdir or a checkpoint file")

    # method
    method = c.choice("method.name", methods.names())
    teacher = c.get("teacher.workdir")
    if teacher:
        c.existing_path("teacher.workdir", directory=True, what="a finished training workdir")
        if files.isdir(teacher) and not files.isfile(files.join(teacher, "final_metrics.json")):
            c.bad("teacher.workdir", teacher, "a finished run (it has no final_metrics.json)")
    del method

    # optimizer and schedule
    c.choice("optimizer.name", ("sgd",))
    c.number("optimizer.lr", low=0, low_open=True)
    c.number("optimizer.momentum", low=0, high=1, high_open=True)
    c.number("optimizer.weight_decay", low=0)
    c.number("optimizer.reference_batch_size", integer=True, low=0)
    c.choice("schedule.name", optim.SCHEDULES)
    c.choice("schedule.granularity", ("epoch", "step"))
    c.number("schedule.decay_factor", low=0, high=1, low_open=True)
    c.number("schedule.warmup_epochs", low=0)
    decay = c.get("schedule.decay_epochs")
    if epochs is not None:
        if decay is not _MISSING:
            outside = [e for e in tuple(decay) if not 0 < e <= epochs]
            if outside:
                c.found.append(
                    f"config.schedule.decay_epochs={tuple(decay)} has {outside} outside "
                    f"(0, num_epochs={epochs}]; a shorter run should rescale the schedule "
                    "through the config argument (e.g. --config=<file>:epochs=N) rather than "
                    "--config.num_epochs")

    # evaluation and checkpoints
    c.number("eval.every_epochs", low=0)
    c.number("eval.batch_size", integer=True, low=1)
    c.choice("eval.shot_convention", shots.SHOT_CONVENTIONS)
    c.number("eval.num_bins", integer=True, low=1)
    evals = c.get("evals")
    if evals is not _MISSING and evals is not None:
        for name, settings in evals.items():
            try:
                evaluator = methods.evaluator(name)
                if evaluator.validate is not None:
                    evaluator.validate(**(settings.to_dict() if hasattr(settings, "to_dict")
                                          else dict(settings or {})))
            except (ValueError, TypeError) as err:
                c.found.append(f"config.evals.{name}: {err}")
    c.number("checkpoint.every_epochs", low=0)
    c.number("checkpoint.max_to_keep", integer=True, low=1)
    return c.found


def _finish_problems(config) -> list[str]:
    from ltx import methods
    if config.method.get("name") not in methods.names():
        return []  # Reported per stage.
    try:
        methods.finish_step(config)
    except ValueError as err:
        return [str(err)]
    return []


# -- the build tier ---------------------------------------------------------------------------

def stand_in_counts(num_classes: int, imbalance_ratio: float = 10.0):
    """int [C] exponential long-tailed counts from 100 down to 100 / ratio: what methods are
    built on to check their config before the real counts are read."""
    import numpy as np
    ratio = max(float(imbalance_ratio), 1.0)
    exponent = np.arange(num_classes) / max(num_classes - 1, 1)
    return np.maximum((100 * ratio ** -exponent).astype(np.int64), 1)


def _built_problems(config) -> list[str]:
    import jax

    from ltx import methods, models, optim
    from ltx.data import datasets

    found = []
    try:
        num_classes, _ = datasets.spec(config.data)
    except (OSError, ValueError) as err:
        return [f"config.data ({config.data.name!r}): {_message(err)}"]
    counts = stand_in_counts(num_classes, config.data.get("imbalance_ratio", 10.0))
    method = None
    try:
        method = methods.build(config.method, counts)
    except (ValueError, KeyError, TypeError) as err:
        found.append(f"config.method ({config.method.name!r}): {_message(err)}")
    if method is not None and methods.hook(config.method.name, "dataset_view") is None:
        # (A method with a dataset view builds its model on the view's classes; the trainer
        # checks that one once the data is read.)
        try:
            method.model(models.build(config.model, num_classes=num_classes,
                                      num_experts=method.num_experts))
        except (ValueError, KeyError, TypeError) as err:
            found.append(f"config.model: {_message(err)}")
    try:
        optim.learning_rate_schedule(config.schedule, base_lr=1.0,
                                     num_epochs=config.num_epochs, steps_per_epoch=1.0)
    except ValueError as err:
        found.append(_message(err))
    devices = jax.device_count()
    for key in ("batch_size", "eval.batch_size"):
        value = config.batch_size if key == "batch_size" else config.eval.batch_size
        if value % devices:
            found.append(f"config.{key}={value} is not divisible by the {devices} devices; "
                         f"expected a multiple of {devices}")
    return found


def _message(err: BaseException) -> str:
    return str(err.args[0]) if len(err.args) == 1 else str(err)
