"""Every check of a config that needs no data, run before any device, dataset or model work.

`problems(config)` lists what is wrong with a config, every problem at once, each naming the
config key, the bad value and what is expected; `check(config)` raises `ConfigError` with all of
them. Two tiers:

- the static tier reads only the config. What each field accepts (type, range, the registry
  its name must be in, a path that must exist) is declared beside the field's default in
  `ltx.config_lib` (`BASE_FIELDS` and each family helper's own, as `config_lib.Accepts`); this
  module checks a config against those declarations and adds the checks that relate several
  fields (widths per trunk, decay epochs within the run, the data source's packages and
  folders, stage structure, evaluator settings). It imports no JAX computation, so
  `ltx.train` runs it before `jax.distributed.initialize()`, which must precede any;
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

import importlib
import importlib.util
import math
import numbers
import re

import ml_collections

from ltx import config_lib, files


class ConfigError(ValueError):
    """A config with one or more bad values; `problems` lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the config:\n{lines}")


# The config fields that say where the data lies; a tool that reads no data ignores them.
DATA_LOCATIONS = ("data.root", "data.list_dir", "data.data_dir", "data.records_dir",
                  "data.tfds_data_dir")


def check(config: ml_collections.ConfigDict, *, built: bool = True, data: bool = True) -> None:
    """Raises `ConfigError` listing every problem of `config` (see `problems`)."""
    found = problems(config, built=built, data=data)
    if found:
        raise ConfigError(found)


def problems(config: ml_collections.ConfigDict, *, built: bool = True,
             data: bool = True) -> list[str]:
    """Every problem of `config` and of each of its stages; [] for a good config. With
    `data=False` (a tool that reads none of the data: `ltx-stats --config`, `ltx-import` given
    the class counts) the problems of `DATA_LOCATIONS` are no problems."""
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
    if not data:
        location = re.compile(r"(^|: )config\.(" + "|".join(map(re.escape, DATA_LOCATIONS))
                              + r")[ =]")
        found = [p for p in found if not location.search(p)]
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

    def accepts(self, key: str, rule: "config_lib.Accepts"):
        """Checks `key` against what its helper declares (`config_lib.Accepts`); returns the
        value where it is good, else None."""
        if rule.kind in ("number", "integer"):
            return self.number(key, integer=rule.kind == "integer", low=rule.low,
                               high=rule.high, low_open=rule.low_open,
                               high_open=rule.high_open, required=rule.required)
        if rule.kind == "choice":
            return self.choice(key, _registry(rule.options), required=rule.required)
        if rule.kind == "flag":
            return self.boolean(key)
        if rule.kind == "path":
            return self.existing_path(key, directory=rule.directory, what=rule.what)
        raise ValueError(f"{key}: unknown kind of field {rule.kind!r}")

    def valid(self, key: str):
        """The value of `key` where it is what its declaration accepts, else None (its problem
        is reported once, by `accepts`)."""
        rule = _all_declared().get(key)
        if rule is None:
            value = self.get(key)
            return None if value is _MISSING else value
        return _Checker(self.config).accepts(key, rule)

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


def _registry(options) -> tuple:
    """A choice's values: `options` itself, or the registry 'module:NAME' names (a tuple, or a
    function giving one)."""
    if not isinstance(options, str):
        return tuple(options)
    module, _, name = options.partition(":")
    found = getattr(importlib.import_module(module), name)
    return tuple(found() if callable(found) else found)


def _all_declared() -> dict:
    return {**config_lib.BASE_FIELDS, **config_lib.LONG_TAIL_FIELDS,
            **config_lib.FIXED_SIZE_FIELDS, **config_lib.CIFAR_AUGMENT_FIELDS,
            **config_lib.LIST_FILE_FIELDS, **config_lib.IMAGENET_AUGMENT_FIELDS,
            **config_lib.CIFAR_RESNET_FIELDS}


def _static_problems(config) -> list[str]:
    """Each field against what its helper in `ltx.config_lib` declares it accepts, then the
    checks that relate several fields or need an optional package."""
    c = _Checker(config)
    for key, rule in _declared_fields(c).items():
        c.accepts(key, rule)
    _pack_problems(c)
    _data_problems(c)
    _model_problems(c)
    teacher = c.get("teacher.workdir")
    if teacher and files.isdir(teacher) and not files.isfile(
            files.join(teacher, "final_metrics.json")):
        c.bad("teacher.workdir", teacher, "a finished run (it has no final_metrics.json)")
    _schedule_problems(c)
    _evals_problems(c)
    return c.found


def _declared_fields(c) -> dict:
    """{dotted key: `config_lib.Accepts`} of the fields this config's helpers set: the base
    config's, its data family's and its trunk's."""
    from ltx.data import device_augment
    rules = dict(config_lib.BASE_FIELDS)
    name, kind = c.valid("data.name"), c.valid("data.augment.kind")
    if name in device_augment.IN_MEMORY_DATASETS:
        rules.update(config_lib.LONG_TAIL_FIELDS, **config_lib.FIXED_SIZE_FIELDS)
        if kind == "cifar":
            rules.update(config_lib.CIFAR_AUGMENT_FIELDS)
    elif name is not None:  # The list-file datasets.
        rules.update(config_lib.LIST_FILE_FIELDS)
        if name == "list_files":
            rules.update(config_lib.LONG_TAIL_FIELDS)
        if kind == "imagenet":
            rules.update(config_lib.IMAGENET_AUGMENT_FIELDS)
    if c.valid("model.name") == "resnet32":
        rules.update(config_lib.CIFAR_RESNET_FIELDS)
    return rules


def _pack_problems(c) -> None:
    seeds = c.get("pack.seeds")
    if seeds not in (_MISSING, None) and (
            not isinstance(seeds, (tuple, list)) or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        c.bad("pack.seeds", seeds, "distinct integer seeds, e.g. (1, 2, 3)")
    if c.get("tensorboard") is True and importlib.util.find_spec("tensorboardX") is None:
        c.found.append("config.tensorboard=True needs tensorboardX, which is not installed: "
                       "pip install -e '.[tensorboard]'")


def _data_problems(c) -> None:
    from ltx.data import device_augment
    name, source = c.valid("data.name"), c.valid("data.source")
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
    if source == "tfds":
        if importlib.util.find_spec("tensorflow_datasets") is None:
            c.found.append("config.data.source='tfds' needs tensorflow-datasets, which is not "
                           "installed: pip install -e '.[tfds]' (TensorFlow is not needed)")
        if name == "list_files" and not c.get("data.tfds_name"):
            c.found.append("config.data.tfds_name is empty; a custom dataset read from TFDS "
                           "needs the TFDS dataset's name (e.g. 'food101')")
    if name is not None and name not in device_augment.IN_MEMORY_DATASETS:
        kind = c.valid("data.augment.kind")
        if kind != "imagenet" and kind is not None:
            c.bad("data.augment.kind", kind, f"'imagenet' for {name} (images of every size)")
        if not c.get("data.root") and source not in ("tfds", "records"):
            c.found.append(f"config.data.root is empty; expected the image root of {name} "
                           "(the folder the list files' paths are relative to)")
        if name == "list_files" and c.get("data.num_classes") != 0:
            c.accepts("data.num_classes", config_lib.integer(low=2))  # 0: from the lists.
    if name is not None and c.get("data.augment.on_device") is True:
        c.found.extend(device_augment.unsupported(c.config.data.augment, name))


def _model_problems(c) -> None:
    arch, widths = c.valid("model.name"), c.get("model.widths")
    stages = 3 if arch == "resnet32" else 4
    if widths is not _MISSING and arch is not None:
        if (not isinstance(widths, (tuple, list)) or len(widths) != stages
                or not all(isinstance(w, int) and w > 0 for w in widths)):
            c.bad("model.widths", widths, f"{stages} positive stage widths for {arch}")
    strides = c.get("model.strides")
    if arch == "resnet32" and strides is not _MISSING and (
            not isinstance(strides, (tuple, list)) or len(strides) != 3):
        c.bad("model.strides", strides, "3 stage strides")
    c.accepts("model.num_shared_stages", config_lib.integer(low=0, high=stages))


def _schedule_problems(c) -> None:
    epochs, decay = c.valid("num_epochs"), c.get("schedule.decay_epochs")
    if epochs is not None and decay is not _MISSING:
        outside = [e for e in tuple(decay) if not 0 < e <= epochs]
        if outside:
            c.found.append(
                f"config.schedule.decay_epochs={tuple(decay)} has {outside} outside "
                f"(0, num_epochs={epochs}]; a shorter run should rescale the schedule "
                "through the config argument (e.g. --config=<file>:epochs=N) rather than "
                "--config.num_epochs")


def _evals_problems(c) -> None:
    from ltx import methods
    evals = c.get("evals")
    if evals is _MISSING or evals is None:
        return
    for name, settings in evals.items():
        try:
            evaluator = methods.evaluator(name)
            if evaluator.validate is not None:
                evaluator.validate(**(settings.to_dict() if hasattr(settings, "to_dict")
                                      else dict(settings or {})))
        except (ValueError, TypeError) as err:
            c.found.append(f"config.evals.{name}: {err}")


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
