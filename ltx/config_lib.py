"""Config defaults shared by every file in configs/; each experiment overrides what its paper sets.

A config file reads top to bottom: its arguments, the recipe at the paper's length, then that
recipe moved to the `epochs` asked for and, for `tiny=1`, shrunk:

    def get_config(arg=None):
        args = config_lib.parse_arg(arg, ir=100.0, epochs=200)  # Also `tiny` (0 or 1).
        c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"], ...)
        c.method = balpoe.method_config((1.0, 0.0, -1.0))
        c = config_lib.scale_epochs(c, args["epochs"])
        return config_lib.shrink(c) if args["tiny"] else c
"""

import copy
import dataclasses
import difflib
import functools
import importlib.util
import os

import ml_collections

# The keys of `config.stages.<name>` that link stages instead of overriding the config.
LINK_KEYS = ("init_from", "teacher_from")

# `config.pack.form`s (`ltx.packed`): 'auto' is 'loop' on CPU, 'vmap' elsewhere.
PACK_FORMS = ("auto", "loop", "scan", "vmap")


@dataclasses.dataclass(frozen=True)
class Accepts:
    """What one config field accepts. Each helper below declares its fields' `Accepts` beside
    their defaults (`BASE_FIELDS` after `base_config`, ...); `ltx.config_check` checks a config
    against them before JAX starts, with the checks that relate several fields.

    Attributes:
      kind: 'number', 'integer', 'flag', 'choice' or 'path'.
      low, high, low_open, high_open: a number's range (open: the bound itself is refused).
      options: a choice's values, or 'module:NAME' naming a registry (a tuple, or a function
        giving one) that is read only when checking, so that a config file imports no JAX.
      required: whether a missing field is a problem (else it is not checked).
      directory, what: a path that must exist when it is set: a folder or any file, `what`
        naming it in the message.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    options: tuple | str = ()
    required: bool = True
    directory: bool = False
    what: str = ""


def number(low=None, high=None, *, low_open=False, high_open=False) -> Accepts:
    """A finite number in [low, high] (bounds open where asked)."""
    return Accepts("number", low, high, low_open, high_open)


def integer(low=None, high=None) -> Accepts:
    """An integer in [low, high]."""
    return Accepts("integer", low, high)


def flag() -> Accepts:
    """True or False (checked where present)."""
    return Accepts("flag", required=False)


def one_of(options, *, required: bool = True) -> Accepts:
    """One of `options` (values, or 'module:NAME' of a registry)."""
    return Accepts("choice", options=options, required=required)


def existing(what: str, *, directory: bool = True) -> Accepts:
    """A path that exists when it is not empty (a local path or a URL such as gs://...)."""
    return Accepts("path", required=False, directory=directory, what=what)


def from_json(raw: dict) -> ml_collections.ConfigDict:
    """The ConfigDict of a config written as JSON (config.json): JSON's lists back to tuples."""
    def tuples(x):
        if isinstance(x, dict):
            return {k: tuples(v) for k, v in x.items()}
        if isinstance(x, list):
            return tuple(tuples(v) for v in x)
        return x

    return ml_collections.ConfigDict(tuples(raw))


def base_config() -> ml_collections.ConfigDict:
    """The defaults every config starts from (its helpers below then set a dataset family and a
    trunk); what each field accepts is `BASE_FIELDS`."""
    c = ml_collections.ConfigDict()
    c.seed = 1
    c.num_epochs = 200
    c.batch_size = 128  # Global, over all devices and hosts.
    c.mixup_alpha = 0.0  # 0 turns Mixup off.
    c.mixup_epochs = -1  # Mixup on epochs < mixup_epochs only (ACE); -1: every epoch.
    c.log_every_steps = 50
    c.tensorboard = False
    # JAX's persistent compilation cache (ltx.compile_cache): '' = $LTX_COMPILE_CACHE, else
    # ~/.cache/ltx/jax; 'off' disables it.
    c.compile_cache_dir = ""
    c.distributed = False  # jax.distributed.initialize() for multi-host (or LTX_DISTRIBUTED=1).
    # Packed runs (ltx.packed): these seeds trained as one process, run k in <workdir>/seed<k>;
    # form 'loop' (each run's step in turn), 'scan' (one program, the runs one after another),
    # 'vmap' (one program over stacked runs) or 'auto' (loop on CPU, vmap elsewhere).
    c.pack = ml_collections.ConfigDict()
    c.pack.seeds = ()
    c.pack.form = "auto"
    _add_data_defaults(c)
    _add_model_defaults(c)
    # The method's fields come from its home's config helper (e.g.
    # `ltx.methods.balpoe.method_config`, `ltx.methods.ride.config.method_config`). A field named
    # `*_epoch` is an epoch of the schedule (`scale_epochs` moves it with `epochs=N`).
    c.method = ml_collections.ConfigDict()
    c.method.name = ""

    _add_optimizer_defaults(c)
    _add_eval_defaults(c)

    # Distillation from a finished run (its workdir); stages link teachers with teacher_from.
    c.teacher = ml_collections.ConfigDict()
    c.teacher.workdir = ""

    # Multi-stage methods (ltx/stages.py): stage names in order, each stage's overrides under
    # stages.<name>, and an optional finishing step ('cbe_fusion').
    c.stage_order = ()
    c.stages = ml_collections.ConfigDict()
    c.finish = ""

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_epochs = 20
    c.checkpoint.max_to_keep = 2
    c.checkpoint.async_save = True
    # A resume whose recipe (seed, batch size, schedule, method, data) differs from the one the
    # checkpoint was written with is refused unless this is set; the new config is then kept
    # beside the first as config.<step>.json.
    c.checkpoint.allow_config_change = False
    return c


def _add_optimizer_defaults(c: ml_collections.ConfigDict) -> None:
    """config.optimizer and config.schedule: SGD with Nesterov momentum and the CIFAR recipes'
    multistep schedule."""
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"
    c.optimizer.lr = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    # Linear scaling: lr is for this global batch; 0 uses lr as given for any batch_size.
    c.optimizer.reference_batch_size = 0
    # ((regex over parameter paths, lr multiplier), ...): PyTorch-style parameter groups.
    c.optimizer.lr_multipliers = ()
    c.optimizer.trainable = ""  # Regex over parameter paths: only these train ('' = all).

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "multistep"
    c.schedule.warmup_epochs = 5
    c.schedule.decay_epochs = (160, 180)
    c.schedule.decay_factor = 0.1
    c.schedule.granularity = "epoch"


def _add_data_defaults(c: ml_collections.ConfigDict) -> None:
    """config.data: the dataset, its source and reading, the augmentation's common fields."""
    c.data = ml_collections.ConfigDict()
    c.data.name = ""  # A dataset helper below sets it with its family's fields.
    # Where the records come from: 'files' (CIFAR's prepared folder, list files and images),
    # 'tfds' (a TFDS dataset prepared in ArrayRecord format, read without TensorFlow; the
    # 'tfds' extra; ltx.data.tfds_source says how each family's splits are chosen) or, for the
    # list-file datasets, 'records' (pre-resized shards of `ltx-prepare records`,
    # data.records_dir; ltx.data.records).
    c.data.source = "files"
    c.data.tfds_name = ""  # '' = the family's TFDS dataset (tfds_source.TFDS_NAMES); 'name:1.0.0'.
    c.data.tfds_data_dir = ""  # '' = $TFDS_DATA_DIR or ~/tensorflow_datasets; may be gs://.
    # grain worker processes for decoding and augmentation; -1: one per core but one (at most 16).
    c.data.num_workers = 0
    c.data.sampler = "shuffle"  # Or 'class_balanced' (RIDE's router stage).
    # Epochs as the official DataLoaders count them (drop_last=False): ceil(N / B) steps, the last
    # batch smaller (padded and masked). 'drop': floor(N / B); 'stream': ltx's earlier batches
    # across epoch boundaries (N / B steps).
    c.data.last_batch = "pad"
    c.data.augment = ml_collections.ConfigDict()
    # 'cifar': padded crop/flip/rotation/AutoAugment on fixed-size images (digits, CIFAR);
    # 'imagenet': random resized crop/flip/colour jitter/RandAugment (the list-file datasets).
    c.data.augment.kind = "cifar"
    c.data.augment.flip = True
    # Keep the training images on the devices and run the whole augmentation inside the train
    # step (ltx.data.device_augment) instead of in host Python: the in-memory datasets' default
    # (add_fixed_size_data); False there selects the host pipeline.
    c.data.augment.on_device = False


def _add_eval_defaults(c: ml_collections.ConfigDict) -> None:
    """config.evals (the report's evaluators) and config.eval (when and how to evaluate)."""
    # The parts of an evaluation report (ltx.evaluators), in order, each with its settings;
    # one that does not apply to the method is skipped. `ltx-eval --evals=...` adds more (e.g.
    # test_time_aggregation, which learns expert weights on each test distribution).
    c.evals = ml_collections.ConfigDict()
    c.evals.uniform = ml_collections.ConfigDict()
    c.evals.shifted = ml_collections.ConfigDict({"max_per_class": 100,
                                                 "factors": (2, 5, 10, 25, 50)})
    c.evals.expert_priors = ml_collections.ConfigDict()
    c.evals.routing = ml_collections.ConfigDict()
    c.evals.fusions = ml_collections.ConfigDict()

    c.eval = ml_collections.ConfigDict()
    c.eval.every_epochs = 20  # 0: only at the end.
    c.eval.batch_size = 500
    c.eval.shot_convention = "ride"
    c.eval.num_bins = 15
    c.eval.posthoc_test_prior = False


def _add_model_defaults(c: ml_collections.ConfigDict) -> None:
    """config.model: the trunk's common fields (its family helper adds its own)."""
    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet32"  # A trunk helper below sets its family's fields.
    c.model.num_shared_stages = 1
    c.model.head = "cosine"
    c.model.cosine_scale = 30.0
    # 'auto': 'scan' on CPU (vmapped convolutions are slow on XLA:CPU), 'vmap' elsewhere.
    c.model.expert_strategy = "auto"
    # BatchNorm's running variance: 'unbiased' (PyTorch, every official code base) or 'biased'
    # (flax's nn.BatchNorm). Batch statistics are those of the global batch either way.
    c.model.bn_running_var = "unbiased"
    # 'bfloat16': convolutions and matmuls of the trunk in bfloat16 (mixed precision); parameters,
    # BatchNorm statistics, the heads, logits and losses stay float32.
    c.model.dtype = "float32"
    # An ltx workdir (or its checkpoints/<step> folder) whose parameters initialise the model;
    # trunk weights are copied into every expert (see ltx.checkpointing.transplant).
    c.model.init_checkpoint = ""


# What the fields of `base_config` accept.
BASE_FIELDS = {
    "seed": integer(),
    "num_epochs": number(low=0, low_open=True),
    "batch_size": integer(low=1),
    "mixup_alpha": number(low=0),
    "mixup_epochs": number(low=-1),
    "log_every_steps": integer(low=1),
    "tensorboard": flag(),
    "distributed": flag(),
    "pack.form": one_of(PACK_FORMS, required=False),
    "data.name": one_of("ltx.data.datasets:NAMES"),
    "data.source": one_of("ltx.data.datasets:SOURCES", required=False),
    "data.tfds_data_dir": existing("a TFDS data directory"),
    "data.num_workers": integer(low=-1),
    "data.sampler": one_of("ltx.data.pipeline:SAMPLERS"),
    "data.last_batch": one_of("ltx.data.pipeline:LAST_BATCH", required=False),
    "data.augment.kind": one_of(("cifar", "imagenet")),
    "data.augment.flip": flag(),
    "data.augment.on_device": flag(),
    "model.name": one_of("ltx.models:ARCHITECTURES"),
    "model.head": one_of("ltx.models:HEAD_KINDS"),
    "model.cosine_scale": number(low=0, low_open=True),
    "model.expert_strategy": one_of("ltx.models:EXPERT_STRATEGIES"),
    "model.bn_running_var": one_of("ltx.models:BN_RUNNING_VARS", required=False),
    "model.dtype": one_of("ltx.models:COMPUTE_DTYPES", required=False),
    "model.init_checkpoint": existing("an ltx workdir or a checkpoint file", directory=False),
    "method.name": one_of("ltx.methods:names"),
    "optimizer.name": one_of(("sgd",)),
    "optimizer.lr": number(low=0, low_open=True),
    "optimizer.momentum": number(low=0, high=1, high_open=True),
    "optimizer.weight_decay": number(low=0),
    "optimizer.reference_batch_size": integer(low=0),
    "schedule.name": one_of("ltx.optim:SCHEDULES"),
    "schedule.granularity": one_of(("epoch", "step")),
    "schedule.decay_factor": number(low=0, high=1, low_open=True),
    "schedule.warmup_epochs": number(low=0),
    "eval.every_epochs": number(low=0),
    "eval.batch_size": integer(low=1),
    "eval.shot_convention": one_of("ltx.data.shots:SHOT_CONVENTIONS"),
    "eval.num_bins": integer(low=1),
    "eval.posthoc_test_prior": flag(),
    "teacher.workdir": existing("a finished training workdir"),
    "checkpoint.every_epochs": number(low=0),
    "checkpoint.max_to_keep": integer(low=1),
    "checkpoint.async_save": flag(),
}


def add_fixed_size_data(c: ml_collections.ConfigDict, name: str, *,
                        imbalance_ratio: float) -> ml_collections.ConfigDict:
    """The fields of the in-memory fixed-size datasets (digits-LT, CIFAR-10/100-LT): the
    long-tailed subset and the 'cifar' augmentation. In place; returns `c`."""
    c.data.name = name
    # CIFAR: the folder ltx-prepare wrote into; empty for $LTX_DATA_DIR, else ~/ltx_data.
    c.data.data_dir = ""
    c.data.imbalance_ratio = imbalance_ratio
    c.data.profile = "exp"
    c.data.subset_seed = 0  # The references' rand_number for the long-tailed selection.
    c.data.augment.kind = "cifar"
    c.data.augment.crop_padding = 4
    c.data.augment.rotation = 0.0
    c.data.augment.autoaugment = False
    # About 10x the host pipeline's images/s on one core (experiments/benchmark_data_path.py).
    c.data.augment.on_device = True
    return c


# What the fields of a long-tailed subset accept (`add_fixed_size_data`, and 'list_files').
LONG_TAIL_FIELDS = {
    "data.imbalance_ratio": number(low=1),
    "data.profile": one_of("ltx.data.long_tail:PROFILES"),
    "data.subset_seed": integer(),
}
# ... of the in-memory datasets' data folder and their 'cifar' augmentation.
FIXED_SIZE_FIELDS = {
    "data.data_dir": existing("a data directory"),
}
CIFAR_AUGMENT_FIELDS = {
    "data.augment.crop_padding": integer(low=0),
    "data.augment.rotation": number(low=0),
    "data.augment.autoaugment": flag(),
}


def add_list_file_data(c: ml_collections.ConfigDict, name: str, *,
                       root: str = "") -> ml_collections.ConfigDict:
    """The fields of the list-file datasets (ImageNet-LT, iNaturalist 2018, Places-LT;
    `ltx/data/image_lists.py`) and of the 'imagenet' augmentation. In place; returns `c`."""
    c.data.name = name
    c.data.root = root  # Image root; the list files' paths are relative to it.
    c.data.list_dir = ""  # Folder of the list files; '' = data.root.
    # List file names (relative to list_dir) or absolute paths; '' = the reference name
    # (image_lists.DEFAULT_LISTS), 'none' = no such split (val only).
    c.data.train_list = ""
    c.data.val_list = ""
    c.data.test_list = ""
    c.data.check_files = False  # Stat every listed image when the dataset is built.
    # data.source='records': the folder `ltx-prepare records` wrote the lists' shards into.
    c.data.records_dir = ""
    if name == "list_files":  # Any dataset in this layout; the others have a known size.
        c.data.num_classes = 0  # 0: the lines of <list_dir>/classes.txt, else max label + 1.
        # A ratio > 1 takes the CIFAR-LT subset of the training list (a balanced set made
        # long-tailed); 1 trains on the list as it is.
        c.data.imbalance_ratio = 1.0
        c.data.profile = "exp"
        c.data.subset_seed = 0
    c.data.augment.kind = "imagenet"
    c.data.augment.crop_size = 224  # Also the eval crop.
    c.data.augment.eval_resize = 256  # Shorter side before the eval centre crop.
    c.data.augment.crop_scale = (0.08, 1.0)  # RandomResizedCrop area fraction ...
    c.data.augment.crop_ratio = (3 / 4, 4 / 3)  # ... and aspect-ratio range.
    c.data.augment.color_jitter = (0.4, 0.4, 0.4, 0.0)  # Brightness, contrast, saturation, hue.
    c.data.augment.randaugment = False  # timm 'rand-n{ops}-m{magnitude}-mstd{magnitude_std}'.
    c.data.augment.randaugment_ops = 2
    c.data.augment.randaugment_magnitude = 10.0
    c.data.augment.randaugment_magnitude_std = 0.5
    c.data.augment.on_device = False  # These decode files on the host.
    return c


# What the fields of `add_list_file_data` accept ('list_files' adds LONG_TAIL_FIELDS and
# data.num_classes, an integer >= 2 or 0).
LIST_FILE_FIELDS = {
    "data.root": existing("a folder"),
    "data.list_dir": existing("a folder"),
    "data.records_dir": existing("a folder"),
}
IMAGENET_AUGMENT_FIELDS = {
    "data.augment.crop_size": integer(low=1),
    "data.augment.eval_resize": integer(low=1),
}


def add_cifar_resnet(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The CIFAR ResNet-32 trunk's fields. In place; returns `c`."""
    c.model.name = "resnet32"
    c.model.widths = (16, 32, 64)
    c.model.blocks_per_stage = 5
    c.model.strides = (1, 2, 2)
    return c


# What the CIFAR ResNet-32's own fields accept (widths and strides: config_check, by arch).
CIFAR_RESNET_FIELDS = {
    "model.blocks_per_stage": integer(low=1),
}


def add_imagenet_resnet(c: ml_collections.ConfigDict, arch: str) -> ml_collections.ConfigDict:
    """An ImageNet trunk ('resnet10', 'resnet50', 'resnet152', 'resnext50_32x4d'): its name and
    the 4 stage plane counts. In place; returns `c`."""
    c.model.name = arch
    c.model.widths = (64, 128, 256, 512)
    c.model.stride_on_1x1 = False  # True: Caffe-style bottlenecks (Caffe-converted weights).
    return c


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file at `path`, as `--config=path:arg` would give it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location(
        os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


# -- config arguments: `--config=<file>:key=value,...` -------------------------------------------

# Arguments that every config takes: `tiny` (0 or 1; `shrink`) and, declared by the config with
# its recipe's length as the default, `epochs` (`scale_epochs`).
TINY = "tiny"
EPOCHS = "epochs"


def _close(word: str, names) -> str:
    matches = difflib.get_close_matches(word, [str(n) for n in names], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


def parse_arg(arg: str | None, **defaults) -> dict:
    """Parses 'key=value,key=value' config arguments into a dict of typed values.

    Example: `get_config('ir=50')`, or on the command line `--config=configs/x.py:ir=50`.
    `defaults` names the config's arguments and their types; `tiny` (0 or 1) is added to every
    config's (the dict holds it as a bool). With `tiny=1` an `epochs` argument that is not given
    is 1, so that the config's `scale_epochs` makes every stage at most one epoch.
    """
    if TINY in defaults:
        raise ValueError(f"config argument {TINY!r} is every config's (parse_arg adds it); "
                         "a config must not declare it")
    types = dict(defaults, **{TINY: 0})
    values, given = dict(defaults), set()
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"config argument {item!r}; expected key=value with key in "
                             f"{sorted(types)}" + ("" if not sep else _close(key, types)))
        try:
            values[key] = type(types[key])(value)
        except ValueError:
            raise ValueError(f"config argument {item!r}; expected a "
                             f"{type(types[key]).__name__} value for {key}") from None
        given.add(key)
    tiny = values.pop(TINY, 0)
    if tiny not in (0, 1):
        raise ValueError(f"config argument tiny={tiny}; expected tiny=0 or tiny=1")
    values[TINY] = bool(tiny)
    if EPOCHS in defaults:
        if tiny and EPOCHS not in given:
            values[EPOCHS] = type(defaults[EPOCHS])(1)
        if values[EPOCHS] < (0 if EPOCHS not in given else 1):  # 0 may mean "the recipe's".
            raise ValueError(f"config argument epochs={values[EPOCHS]}; expected an integer "
                             ">= 1")
    return values


# -- the length of a recipe ------------------------------------------------------------------

# The fields that count epochs, relative to the config or to a stage's overrides: lengths and
# periods (at least 1 once scaled; 0 stays 0: off / only at the end), epoch indices (0-indexed;
# -1 stays -1: every epoch), the decay points (those that reach 0 are dropped). A method field
# named `*_epoch` is an epoch of the training schedule where the method switches (DRW's
# `drw_epoch`, RIDE's `reweight_epoch`, ALA's `router_epoch`) and scales with it; fields named
# `*_epochs` inside `method` are the lengths of other loops (CBE's fusion calibration) and do not.
_PERIODS = ("eval.every_epochs", "checkpoint.every_epochs")
_INDICES = ("mixup_epochs", "schedule.warmup_epochs")


def _scale(epoch, num: int, den: int):
    """`epoch * num / den` rounded down (exactly for integers)."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
        raise ValueError(f"{epoch!r} is not a number of epochs")
    if isinstance(epoch, int):
        return epoch * num // den
    return epoch * num / den


def _node(tree, dotted: str):
    """(parent, key) of `dotted` in `tree` (a ConfigDict or dict), or (None, None) if absent."""
    *parents, key = dotted.split(".")
    for name in parents:
        if name not in tree:
            return None, None
        tree = tree[name]
    return (tree, key) if key in tree else (None, None)


def _scale_fields(tree, num: int, den: int) -> None:
    """Scales the epoch fields present in `tree` (the config or a stage's overrides) by
    num / den, in place."""
    for dotted in _PERIODS:
        parent, key = _node(tree, dotted)
        if parent is not None and parent[key] > 0:
            parent[key] = max(_scale(parent[key], num, den), 1)
    for dotted in _INDICES:
        parent, key = _node(tree, dotted)
        if parent is not None and parent[key] > 0:
            parent[key] = _scale(parent[key], num, den)
    parent, key = _node(tree, "schedule.decay_epochs")
    if parent is not None:
        parent[key] = tuple(e for e in (_scale(e, num, den) for e in parent[key]) if e > 0)
    method = tree.get("method")
    for key in (() if method is None else method.keys()):
        if key.endswith("_epoch") and not isinstance(method[key], bool) and method[key] > 0:
            method[key] = _scale(method[key], num, den)


def scale_epochs(c: ml_collections.ConfigDict, num_epochs: int, *,
                 keep_stages=()) -> ml_collections.ConfigDict:
    """Moves a recipe written for `c.num_epochs` epochs to `num_epochs` (the `epochs=N` config
    argument). In place; returns `c`.

    Every field that counts epochs is multiplied by num_epochs / c.num_epochs and rounded down:
    the warmup, the decay epochs (those that reach 0 are dropped), the end of Mixup
    (`mixup_epochs`), the method's switches (`method.*_epoch`: DRW, RIDE's re-weighting, ALA's
    router), the evaluation and checkpoint periods (at least 1), and in a multi-stage config each
    stage's own length (at least 1) and schedule. Rounding down keeps every switch that came
    before the end of the recipe before the end of the shorter run. A stage in `keep_stages`
    keeps its overrides as written (lengths the config's arguments gave explicitly, e.g. CBE's
    `expert_epochs`). `num_epochs` equal to the recipe's changes nothing.
    """
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"epochs={num_epochs!r}; expected an integer >= 1")
    reference = c.num_epochs
    if isinstance(reference, bool) or not isinstance(reference, int) or reference < 1:
        raise ValueError(f"config.num_epochs={reference!r}; expected the recipe's length, an "
                         "integer >= 1")
    unknown = sorted(set(keep_stages) - set(c.get("stage_order", ())))
    if unknown:
        raise ValueError(f"keep_stages={tuple(keep_stages)} names {unknown}, not stages of "
                         f"config.stage_order={tuple(c.get('stage_order', ()))}")
    if num_epochs == reference:
        return c
    _scale_fields(c, num_epochs, reference)
    c.num_epochs = num_epochs
    for name in c.get("stage_order", ()):
        stage = c.stages[name]
        if name in keep_stages:
            continue
        _scale_fields(stage, num_epochs, reference)
        if "num_epochs" in stage:
            stage.num_epochs = max(_scale(stage.num_epochs, num_epochs, reference), 1)
    return c


# The trunk a `tiny=1` config trains instead of a deeper ImageNet one: one block per stage, as the
# tiny CIFAR ResNet-32 (its stem and stage layout are the same, so trunk splits, frozen stages
# and expert widths keep their meaning).
TINY_IMAGENET_ARCH = "resnet10"


def shrink(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `tiny=1` version of a built config (big_vision's `runlocal`): one block per stage (the
    CIFAR ResNet-32 with 1 block per stage, the ImageNet trunks ResNet-10) at a quarter of the
    widths, no stage longer than the config (`tiny=1` alone: one epoch each, the schedule
    rescaled by `scale_epochs`), no periodic evaluation, synchronous checkpoints at least every
    epoch of a stage. The data are the config's. For tests and smoke runs; in place, returns
    `c`."""
    def quarter(widths):
        return tuple(max(int(w) // 4, 2) for w in widths)

    def shrink_model(model):
        if "widths" in model:
            model.widths = quarter(model.widths)
        if "blocks_per_stage" in model:
            model.blocks_per_stage = 1
        if model.get("name", "resnet32") != "resnet32":
            model.name = TINY_IMAGENET_ARCH

    shrink_model(c.model)
    c.eval.every_epochs = 0
    c.checkpoint.async_save = False
    for name in c.get("stage_order", ()):
        stage = c.stages[name]
        if "model" in stage:
            shrink_model(stage.model)
        if "num_epochs" in stage:
            stage.num_epochs = min(int(stage.num_epochs), int(c.num_epochs))
        if "eval" in stage and "every_epochs" in stage.eval:
            stage.eval.every_epochs = 0
        if "checkpoint" in stage and "every_epochs" in stage.checkpoint:
            stage.checkpoint.every_epochs = min(int(stage.checkpoint.every_epochs), 1)
    return c


def tiny_option(get_config):
    """Decorator of a config file's `get_config(arg)` that declares neither `tiny` nor `epochs`
    itself (`parse_arg` and `scale_epochs` are the explicit way): takes both arguments off
    `arg`, builds the config from the rest, then `scale_epochs` to `epochs` (with `tiny=1` and
    no `epochs`: 1) and, with `tiny=1`, `shrink`."""
    @functools.wraps(get_config)
    def wrapped(arg=None):
        items = [item for item in (arg or "").split(",") if item]
        ours = parse_arg(",".join(i for i in items if i.partition("=")[0] in (TINY, EPOCHS)),
                         epochs=0)
        c = get_config(",".join(i for i in items
                                if i.partition("=")[0] not in (TINY, EPOCHS)) or None)
        c = scale_epochs(c, ours[EPOCHS] or c.num_epochs)
        return shrink(c) if ours[TINY] else c
    return wrapped


# -- --config.<key>=<value> overrides ---------------------------------------------------------

def unknown_override(config: ml_collections.ConfigDict, overrides) -> str | None:
    """One line naming the first of `overrides` (flags `--config.a.b=v` or dotted keys `a.b`)
    that names no field of `config`, with the closest field names; None if every one exists.

    ml_collections reports such a key as a KeyError whose text is an escaped repr with a
    literal newline; `ltx.cli` shows this line instead.
    """
    for override in overrides:
        key = override.split("=", 1)[0]
        key = key[len("--config."):] if key.startswith("--config.") else key
        node, path = config, "config"
        for name in key.split("."):
            if not isinstance(node, (ml_collections.ConfigDict, dict)) or name not in node:
                fields = list(node.keys()) if isinstance(node, (ml_collections.ConfigDict,
                                                                dict)) else []
                what = (f"{path} has no field {name!r}" if fields else
                        f"{path} is a value, not a group of fields")
                return f"--config.{key}: {what}{_close(name, fields)}"
            node, path = node[name], f"{path}.{name}"
    return None


def digits_lt_config(*, imbalance_ratio: float = 10.0, mixup_alpha: float = 0.0,
                     num_epochs: int = 60):
    """digits-LT with BalPoE's CIFAR recipe scaled to 8x8 images and a 60-epoch schedule
    (warmup 5, x0.1 at 48 and 54), on the CIFAR ResNet-32, moved to `num_epochs` by
    `scale_epochs`; the method is the config's (`c.method = ...`)."""
    c = add_cifar_resnet(add_fixed_size_data(base_config(), "digits_lt",
                                             imbalance_ratio=imbalance_ratio))
    c.data.augment.crop_padding = 1
    c.data.augment.flip = False
    c.mixup_alpha = mixup_alpha
    c.num_epochs = 60
    c.batch_size = 64
    c.schedule.warmup_epochs = 5
    c.schedule.decay_epochs = (48, 54)
    c.eval.every_epochs = 15
    c.eval.batch_size = 100
    c.checkpoint.every_epochs = 15
    c.log_every_steps = 50
    return scale_epochs(c, num_epochs)


def cifar_lt_config(*, dataset: str, imbalance_ratio: float, mixup_alpha: float,
                    rotation: float = 15.0):
    """The standard 200-epoch CIFAR-LT schedule of SADE/BalPoE (docs/methods/balpoe.md) on the
    CIFAR ResNet-32: SGD lr 0.1 at batch 128 (momentum 0.9, Nesterov, weight decay 5e-4),
    warmup 5, x0.1 at 160 and 180. The method is the config's (`c.method = ...`); a config
    changes what its paper changes and moves the recipe to its `epochs` with `scale_epochs`."""
    c = add_cifar_resnet(add_fixed_size_data(base_config(), dataset,
                                             imbalance_ratio=imbalance_ratio))
    c.data.augment.rotation = rotation
    c.data.num_workers = 2
    c.mixup_alpha = mixup_alpha
    c.num_epochs = 200
    c.batch_size = 128
    c.optimizer.update(dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    c.schedule.update(dict(name="multistep", warmup_epochs=5, decay_epochs=(160, 180),
                           decay_factor=0.1))
    c.eval.every_epochs = 20
    c.eval.batch_size = 1024
    return c


# The reference recipes at ImageNet scale (docs/methods/sade.md, docs/methods/balpoe.md; SADE for
# Places-LT): (epochs, lr, global batch, weight decay, schedule, warmup, decay epochs).
_LARGE_SCALE_RECIPES = {
    "imagenet_lt": (180, 0.025, 64, 5e-4, "cosine", 0, ()),
    "inaturalist2018": (100, 0.2, 512, 2e-4, "cosine", 0, ()),
    "places_lt": (30, 0.001, 128, 4e-4, "multistep", 0, (10, 20)),
}


def large_scale_config(*, dataset: str, arch: str, mixup_alpha: float, root: str = "",
                       num_epochs: int | None = None, randaugment: bool = False):
    """ImageNet-LT / iNaturalist 2018 / Places-LT with the references' recipe for `dataset`.

    Trunk `arch` shares the stem and layer1-2 (RIDE/SADE/BalPoE's ImageNet split) and gives every
    expert full-width layer3-4 with a cosine head x 30. `optimizer.reference_batch_size` is the
    recipe's batch, so overriding `batch_size` scales the learning rate linearly. SGD momentum 0.9
    with Nesterov; schedules stepped per epoch as the references do. The method is the config's
    (`c.method = ...`).
    """
    if dataset not in _LARGE_SCALE_RECIPES:
        raise ValueError(f"dataset={dataset!r}; expected one of {sorted(_LARGE_SCALE_RECIPES)}")
    epochs, lr, batch, wd, schedule, warmup, decay = _LARGE_SCALE_RECIPES[dataset]
    c = add_imagenet_resnet(add_list_file_data(base_config(), dataset, root=root), arch)
    c.data.num_workers = -1  # Decoding: a worker per core but one.
    c.data.augment.randaugment = randaugment
    c.model.num_shared_stages = 2
    c.mixup_alpha = mixup_alpha
    c.num_epochs = epochs if num_epochs is None else num_epochs
    # Another length scales the recipe's decay epochs with it (dropping those that reach 0).
    decay = tuple(int(e * c.num_epochs / epochs) for e in decay)
    sgd_recipe(c, lr=lr, batch_size=batch, weight_decay=wd, schedule=schedule,
               warmup_epochs=warmup, decay_epochs=tuple(e for e in decay if e > 0))
    c.eval.every_epochs = max(c.num_epochs // 10, 1)
    c.eval.batch_size = 512
    c.checkpoint.every_epochs = max(c.num_epochs // 10, 1)
    c.log_every_steps = 100
    return c


# Trunks of `custom_config`: the CIFAR ResNet-32 for small images, the ImageNet ones otherwise.
CUSTOM_ARCHES = ("resnet32", "resnet10", "resnet50", "resnet152", "resnext50_32x4d")


def custom_config(*, root: str, arch: str, num_epochs: int, imbalance_ratio: float,
                  crop_size: int | None = None, mixup_alpha: float = 0.0
                  ) -> ml_collections.ConfigDict:
    """Any dataset given as list files or a folder-per-class tree (`data.name='list_files'`;
    `ltx-prepare folders <root>` writes the lists), with a generic recipe that no paper fixes:
    SGD lr 0.1 for batch 128 (Nesterov, momentum 0.9, weight decay 5e-4), 5 warm-up epochs then
    cosine, random resized crops + flips. `arch='resnet32'` takes 32x32 crops (eval: resize 36,
    centre crop 32), the ImageNet trunks 224 (256); `imbalance_ratio` > 1 trains on the
    long-tailed subset of the training list. The method is the config's (`c.method = ...`)."""
    if arch not in CUSTOM_ARCHES:
        raise ValueError(f"arch={arch!r}; expected one of {CUSTOM_ARCHES}")
    c = add_list_file_data(base_config(), "list_files", root=root)
    small = arch == "resnet32"
    if small:
        add_cifar_resnet(c)
        c.model.num_shared_stages = 1
    else:
        add_imagenet_resnet(c, arch)
        c.model.num_shared_stages = 2
    crop = int(crop_size or (32 if small else 224))
    c.data.augment.crop_size = crop
    c.data.augment.eval_resize = int(round(crop * 8 / 7))  # 256 for 224, as ImageNet's.
    c.data.imbalance_ratio = float(imbalance_ratio)
    c.data.num_workers = -1  # Decoding: a worker per core but one.
    c.mixup_alpha = mixup_alpha
    c.num_epochs = num_epochs
    sgd_recipe(c, lr=0.1, batch_size=128, weight_decay=5e-4, schedule="cosine",
               warmup_epochs=min(5, max(num_epochs // 10, 0)))
    c.eval.every_epochs = max(num_epochs // 10, 1)
    c.checkpoint.every_epochs = max(num_epochs // 10, 1)
    c.log_every_steps = 20
    return c


def sgd_recipe(c: ml_collections.ConfigDict, *, lr: float, batch_size: int, weight_decay: float,
               schedule: str = "multistep", warmup_epochs: int = 0, decay_epochs=(),
               decay_factor: float = 0.1, nesterov: bool = True) -> ml_collections.ConfigDict:
    """Sets a reference recipe's SGD and schedule; lr is for `batch_size`, which becomes
    `optimizer.reference_batch_size`, so overriding `batch_size` scales lr linearly."""
    c.batch_size = batch_size
    c.optimizer.lr = lr
    c.optimizer.reference_batch_size = batch_size
    c.optimizer.weight_decay = weight_decay
    c.optimizer.nesterov = nesterov
    c.schedule.name = schedule
    c.schedule.warmup_epochs = warmup_epochs
    c.schedule.decay_epochs = tuple(decay_epochs)
    c.schedule.decay_factor = decay_factor
    return c


def _check_override_keys(base: ml_collections.ConfigDict, overrides: dict, where: str) -> list:
    """The dotted names in `overrides` that `base` has no field for."""
    unknown = []
    for key, value in overrides.items():
        if key not in base:
            unknown.append(f"{where}.{key}")
        elif isinstance(value, dict) and isinstance(base[key], ml_collections.ConfigDict):
            unknown += _check_override_keys(base[key], value, f"{where}.{key}")
    return unknown


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
    """[(name, config of the stage, links {'init_from': name, 'teacher_from': name})] of a
    multi-stage config (`config.stage_order`, `config.stages.<name>`); [] for a single run.

    Each stage's config is `config` without `stages` and `stage_order`, with the stage's
    overrides merged in. Raises ValueError for a stage without overrides, a link to a stage
    that does not come before, an unknown stage under `config.stages`, or override keys that the
    config has no field for (all of them named, e.g. `config.stages.router.num_epoch`).
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
    result, bad_keys = [], []
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
        bad_keys += _check_override_keys(base, overrides, f"config.stages.{name}")
        stage = ml_collections.ConfigDict(base.to_dict())
        _merge(stage, overrides)
        result.append((name, stage, {k: v for k, v in links.items() if v}))
    if bad_keys:
        raise ValueError(f"unknown stage override key(s) {bad_keys}: the config has no such "
                         f"field (stage overrides may set only existing fields, plus "
                         f"{list(LINK_KEYS)})")
    return result
