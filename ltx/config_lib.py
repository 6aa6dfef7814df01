"""Config defaults shared by every file in configs/; each experiment overrides what its paper sets."""

import importlib.util
import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 1
    c.num_epochs = 200
    c.batch_size = 128  # Global, over all devices and hosts.
    c.mixup_alpha = 0.0  # 0 turns Mixup off.
    c.mixup_epochs = -1  # Mixup on epochs < mixup_epochs only (ACE); -1: every epoch.
    c.log_every_steps = 50
    c.tensorboard = False
    c.distributed = False  # jax.distributed.initialize() for multi-host (or LTX_DISTRIBUTED=1).

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits_lt"
    c.data.data_dir = ""  # TFDS data_dir for the CIFAR datasets.
    c.data.imbalance_ratio = 100.0
    c.data.profile = "exp"
    c.data.subset_seed = 0  # The references' rand_number for the long-tailed selection.
    c.data.num_workers = 0  # grain worker processes for decoding and augmentation.
    c.data.sampler = "shuffle"  # Or 'class_balanced' (RIDE's router stage).
    # List-file datasets (imagenet_lt, inaturalist2018, places_lt; ltx/data/image_lists.py):
    c.data.root = ""  # Image root; the list files' paths are relative to it.
    c.data.list_dir = ""  # Folder of the list files; '' = data.root.
    # List file names (relative to list_dir) or absolute paths; '' = the reference name
    # (image_lists.DEFAULT_LISTS), 'none' = no such split (val only).
    c.data.train_list = ""
    c.data.val_list = ""
    c.data.test_list = ""
    c.data.check_files = False  # Stat every listed image when the dataset is built.
    c.data.augment = ml_collections.ConfigDict()
    # 'cifar': padded crop/flip/rotation/AutoAugment on fixed-size images (digits, CIFAR);
    # 'imagenet': random resized crop/flip/colour jitter/RandAugment (the list-file datasets).
    c.data.augment.kind = "cifar"
    c.data.augment.flip = True  # Both kinds.
    c.data.augment.crop_padding = 4  # 'cifar' fields.
    c.data.augment.rotation = 0.0
    c.data.augment.autoaugment = False
    c.data.augment.crop_size = 224  # 'imagenet' fields; crop_size is also the eval crop.
    c.data.augment.eval_resize = 256  # Shorter side before the eval centre crop.
    c.data.augment.crop_scale = (0.08, 1.0)  # RandomResizedCrop area fraction ...
    c.data.augment.crop_ratio = (3 / 4, 4 / 3)  # ... and aspect-ratio range.
    c.data.augment.color_jitter = (0.4, 0.4, 0.4, 0.0)  # Brightness, contrast, saturation, hue.
    c.data.augment.randaugment = False  # timm 'rand-n{ops}-m{magnitude}-mstd{magnitude_std}'.
    c.data.augment.randaugment_ops = 2
    c.data.augment.randaugment_magnitude = 10.0
    c.data.augment.randaugment_magnitude_std = 0.5

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet32"
    c.model.widths = (16, 32, 64)
    c.model.blocks_per_stage = 5
    c.model.strides = (1, 2, 2)
    c.model.num_shared_stages = 1
    c.model.head = "cosine"
    c.model.cosine_scale = 30.0
    # 'auto': 'scan' on CPU (vmapped convolutions are slow on XLA:CPU), 'vmap' elsewhere.
    c.model.expert_strategy = "auto"
    # An ltx workdir (or its checkpoints/<step> folder) whose parameters initialise the model;
    # trunk weights are copied into every expert (see ltx.checkpointing.transplant).
    c.model.init_checkpoint = ""

    c.method = ml_collections.ConfigDict()
    c.method.name = "balpoe"
    c.method.lambdas = (1.0, 0.0, -1.0)

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

    c.eval = ml_collections.ConfigDict()
    c.eval.every_epochs = 20  # 0: only at the end.
    c.eval.batch_size = 500
    c.eval.shot_convention = "ride"
    c.eval.num_bins = 15
    c.eval.posthoc_test_prior = False

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


def parse_arg(arg: str | None, **defaults):
    """Parses 'key=value,key=value' config arguments into a dict of typed values.

    Example: `get_config('ir=50')`, or on the command line `--config=configs/x.py:ir=50`.
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"config argument {item!r}; expected key=value with key in "
                             f"{sorted(defaults)}")
        values[key] = type(defaults[key])(value)
    return values


def digits_lt_config(*, lambdas, imbalance_ratio: float = 10.0, mixup_alpha: float = 0.0,
                     num_epochs: int = 60):
    """digits-LT with BalPoE's CIFAR recipe scaled to 8x8 images and a short schedule."""
    c = base_config()
    c.data.name = "digits_lt"
    c.data.imbalance_ratio = imbalance_ratio
    c.data.augment.crop_padding = 1
    c.data.augment.flip = False
    c.method.lambdas = tuple(lambdas)
    c.mixup_alpha = mixup_alpha
    c.num_epochs = num_epochs
    c.batch_size = 64
    # Very short runs (a smoke test of a few epochs) drop decay points that round to epoch 0.
    c.schedule.decay_epochs = tuple(e for e in (int(0.8 * num_epochs), int(0.9 * num_epochs))
                                    if e > 0)
    c.eval.every_epochs = max(num_epochs // 4, 1)
    c.eval.batch_size = 100
    c.checkpoint.every_epochs = max(num_epochs // 4, 1)
    c.log_every_steps = 50
    return c


def cifar_lt_config(*, dataset: str, lambdas, imbalance_ratio: float, mixup_alpha: float,
                    rotation: float = 15.0):
    """The standard 200-epoch CIFAR-LT schedule of SADE/BalPoE (methods.md sections 3, 4.3)."""
    c = base_config()
    c.data.name = dataset
    c.data.imbalance_ratio = imbalance_ratio
    c.data.augment.rotation = rotation
    c.data.num_workers = 2
    c.method.lambdas = tuple(lambdas)
    c.mixup_alpha = mixup_alpha
    c.eval.every_epochs = 20
    c.eval.batch_size = 1024
    return c


# The reference recipes at ImageNet scale (methods.md sections 3, 4.3; SADE for Places-LT):
# (epochs, lr, global batch, weight decay, schedule, warmup, decay epochs).
_LARGE_SCALE_RECIPES = {
    "imagenet_lt": (180, 0.025, 64, 5e-4, "cosine", 0, ()),
    "inaturalist2018": (100, 0.2, 512, 2e-4, "cosine", 0, ()),
    "places_lt": (30, 0.001, 128, 4e-4, "multistep", 0, (10, 20)),
}


def large_scale_config(*, dataset: str, arch: str, lambdas, mixup_alpha: float, root: str = "",
                       num_epochs: int | None = None, randaugment: bool = False):
    """ImageNet-LT / iNaturalist 2018 / Places-LT with the references' recipe for `dataset`.

    Trunk `arch` shares the stem and layer1-2 (RIDE/SADE/BalPoE's ImageNet split) and gives every
    expert full-width layer3-4 with a cosine head x 30. `optimizer.reference_batch_size` is the
    recipe's batch, so overriding `batch_size` scales the learning rate linearly. SGD momentum 0.9
    with Nesterov; schedules stepped per epoch as the references do.
    """
    if dataset not in _LARGE_SCALE_RECIPES:
        raise ValueError(f"dataset={dataset!r}; expected one of {sorted(_LARGE_SCALE_RECIPES)}")
    epochs, lr, batch, wd, schedule, warmup, decay = _LARGE_SCALE_RECIPES[dataset]
    c = base_config()
    c.data.name = dataset
    c.data.root = root
    c.data.num_workers = 8
    c.data.augment.kind = "imagenet"
    c.data.augment.randaugment = randaugment
    c.model.name = arch
    c.model.widths = (64, 128, 256, 512)
    c.model.num_shared_stages = 2
    c.method.lambdas = tuple(lambdas)
    c.mixup_alpha = mixup_alpha
    c.num_epochs = epochs if num_epochs is None else num_epochs
    sgd_recipe(c, lr=lr, batch_size=batch, weight_decay=wd, schedule=schedule,
               warmup_epochs=warmup, decay_epochs=decay)
    c.eval.every_epochs = max(c.num_epochs // 10, 1)
    c.eval.batch_size = 512
    c.checkpoint.every_epochs = max(c.num_epochs // 10, 1)
    c.log_every_steps = 100
    return c


def margin_method(name: str, *, drw_epoch: int, gamma: float = 1.0) -> ml_collections.ConfigDict:
    """`config.method` of LDAM-DRW ('ldam_drw') or focal loss ('focal'), LDAM-DRW's defaults."""
    return ml_collections.ConfigDict(dict(
        name=name, num_experts=1, max_margin=0.5, scale=30.0, drw_epoch=drw_epoch,
        beta=0.9999, gamma=gamma))


def ldam_drw_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """LDAM-DRW's optimizer: SGD 0.1 without Nesterov, wd 2e-4, warmup 5, x0.01 at 80%/90%."""
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 2e-4
    c.schedule.decay_factor = 0.01
    return c


def ride_method(*, num_experts: int = 3, diversity_factor: float = -0.45, reweight_epoch: int,
                reweight_factor: float = 0.05, router_top_k: int = 30
                ) -> ml_collections.ConfigDict:
    """`config.method` of RIDE (`ltx.methods.ride`), stage 1, the CIFAR defaults."""
    return ml_collections.ConfigDict(dict(
        name="ride", stage="experts", num_experts=num_experts, max_margin=0.5, scale=30.0,
        base_temperature=1.0, diversity_factor=diversity_factor, reweight_factor=reweight_factor,
        reweight_epoch=reweight_epoch, beta=0.9999, distill=False, distill_temperature=1.5,
        distill_multiplicity="official", router_hidden=16, router_top_k=router_top_k,
        router_pos_weight=100.0, router_threshold=0.5))


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


def ride_stages(c: ml_collections.ConfigDict, *, distill: int, router_batch_size: int,
                distill_warmup_epochs: int, router_epochs: int = 5
                ) -> ml_collections.ConfigDict:
    """RIDE's stages: [a distilled student,] then the router.

    `distill`: 0 none; 1 a 6-expert teacher stage, then the student distilled from it; 2 the
    student distilled from the finished run in `config.teacher.workdir` (e.g. a published
    teacher).

    The router stage (methods.md 2.4) starts from the experts' checkpoint, freezes them, samples
    classes uniformly and trains 5 epochs of cosine from lr 0.01 (Nesterov, wd 5e-4) without
    warmup.
    """
    if distill not in (0, 1, 2):
        raise ValueError(f"distill={distill!r}; expected 0 (none), 1 (teacher stage) or 2 "
                         "(teacher.workdir)")
    c.stage_order = ("experts", "router")
    c.stages.experts = ml_collections.ConfigDict()
    if distill == 2:
        c.stages.experts = ml_collections.ConfigDict({
            "method": {"distill": True},
            "schedule": {"warmup_epochs": distill_warmup_epochs}})
    if distill == 1:
        c.stage_order = ("teacher", "experts", "router")
        c.stages.teacher = ml_collections.ConfigDict({"method": {"num_experts": 6}})
        c.stages.experts = ml_collections.ConfigDict({
            "teacher_from": "teacher", "method": {"distill": True},
            "schedule": {"warmup_epochs": distill_warmup_epochs}})
    c.stages.router = ml_collections.ConfigDict({
        "init_from": "experts", "num_epochs": router_epochs, "batch_size": router_batch_size,
        "method": {"stage": "router"}, "data": {"sampler": "class_balanced"},
        "optimizer": {"lr": 0.01, "reference_batch_size": 0, "nesterov": True,
                      "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0, "decay_epochs": ()},
        "eval": {"every_epochs": 0}, "checkpoint": {"every_epochs": router_epochs}})
    return c


def ala_moe_method(*, num_experts: int = 3, router_epoch: int, drw_epoch: int
                   ) -> ml_collections.ConfigDict:
    """`config.method` of ALA + MoE (`ltx.methods.ala_moe`), stage 'moe'."""
    return ml_collections.ConfigDict(dict(
        name="ala_moe", stage="moe", num_experts=num_experts, scale=30.0,
        router_epoch=router_epoch, drw_epoch=drw_epoch, beta=0.9999, distill_temperature=2.0))


def ala_moe_stages(c: ml_collections.ConfigDict, *, full_widths) -> ml_collections.ConfigDict:
    """The MoE, then its distillation into one full-width expert trained from scratch with the
    same schedule (`teacher_from` the MoE)."""
    c.stage_order = ("moe", "distill")
    c.stages.moe = ml_collections.ConfigDict()
    c.stages.distill = ml_collections.ConfigDict({
        "teacher_from": "moe", "method": {"stage": "distill", "num_experts": 1},
        "model": {"widths": tuple(full_widths)}})
    return c
