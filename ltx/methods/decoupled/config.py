"""Config helpers of the decoupled classifiers (used by configs/*_crt.py, *_lws.py,
*_tau_norm.py, *_ncm.py): the method fields, the classifier stage after a joint stage
(`add_stage`), or a single classifier run from a finished workdir (`from_workdir`), and the
official recipes.

`config.method` of a decoupled classifier is the joint method's config with `name` the
decoupled kind, `base` the joint method's name and the kind's own fields (`method_config`); the
joint stage overrides only `method.name` back to `base`, whose builder ignores the other fields.
"""

from __future__ import annotations

import json

import ml_collections

KINDS = ("crt", "lws", "tau_norm", "ncm")
TRAINED_KINDS = ("crt", "lws")  # Stages that train (cRT's heads, LWS's scales).
FINISHED_KINDS = ("tau_norm", "ncm")  # Finish steps: nothing trains.
SPLITS = ("val", "train", "test")
JOINT_STAGE = "joint"

# The official `tau_norm.py` grid, np.linspace(0, 2, 21): 0, 0.1, ..., 2.
TAU_GRID = tuple(round(0.1 * k, 10) for k in range(21))
FEATURE_TYPES = ("un", "l2n", "cl2n")  # NCM: the official `--feat_type` choices.
DISTANCES = ("l2", "cos")  # NCM: the official `--dist_type` choices.

# The classifier stage's (epochs, lr, batch size, weight decay) of the official
# `config/<dataset>/cls_crt.yaml` and `cls_lws.yaml` (the classifier's `optim_params`; every one
# with `coslr: true`, `endlr: 0.0`, momentum 0.9, `ClassAwareSampler` with 4 images per class).
OFFICIAL_RECIPES = {
    "imagenet_lt": {"crt": (10, 0.2, 512, 5e-4), "lws": (5, 0.2, 512, 5e-4)},
    "inaturalist2018": {"crt": (30, 0.2, 512, 1e-4), "lws": (5, 0.2, 512, 1e-4)},
    "places_lt": {"crt": (10, 0.1, 256, 5e-4), "lws": (5, 0.1, 256, 5e-4)},
}

# The joint (representation-learning) run of the official `config/<dataset>/feat_uniform.yaml`
# (iNaturalist: `feat_unifrom.yaml`): instance-balanced sampling, CE, a linear classifier
# (`DotProductClassifier`), SGD momentum 0.9 (no Nesterov) with `coslr: true`, `endlr: 0.0`:
# (arch, epochs, lr, batch size, weight decay).
OFFICIAL_JOINT = {
    "imagenet_lt": ("resnext50_32x4d", 90, 0.2, 512, 5e-4),
    "inaturalist2018": ("resnet50", 90, 0.2, 512, 1e-4),
}

# Each kind's own fields and their defaults (the official ones).
_DEFAULTS = {
    "crt": {},
    "lws": {},
    # tau_norm < 0: chosen on tau_norm_split over tau_norm_grid by the finish step.
    "tau_norm": {"tau_norm": -1.0, "tau_norm_grid": TAU_GRID, "tau_norm_split": "val"},
    # `main.py`'s --feat_type and --dist_type defaults.
    "ncm": {"ncm_features": "cl2n", "ncm_distance": "l2"},
}
_ALL_FIELDS = ("base",) + tuple(k for fields in _DEFAULTS.values() for k in fields)


def joint_config(dataset: str, *, arch: str | None = None) -> ml_collections.ConfigDict:
    """The official joint run of `dataset` (`OFFICIAL_JOINT`) as an ltx config: CE (one expert,
    method 'ce'), linear head, cosine to 0 without warmup,
    floor(N / B) steps an epoch (`run_networks`' `epoch_steps`), the official augmentation
    (RandomResizedCrop 224 + flip, ColorJitter(0.4, 0.4, 0.4, 0) except on iNaturalist), no
    Mixup. `arch` replaces the official trunk."""
    from ltx import config_lib  # Local: config_lib is imported by the trainer's modules too.
    if dataset not in OFFICIAL_JOINT:
        raise ValueError(f"dataset={dataset!r}; expected one of {sorted(OFFICIAL_JOINT)}")
    official_arch, epochs, lr, batch, weight_decay = OFFICIAL_JOINT[dataset]
    c = config_lib.large_scale_config(dataset=dataset, arch=arch or official_arch,
                                      mixup_alpha=0.0, num_epochs=epochs)
    c.model.head = "linear"
    c.data.last_batch = "drop"
    if dataset == "inaturalist2018":
        c.data.augment.color_jitter = (0.0, 0.0, 0.0, 0.0)
    config_lib.sgd_recipe(c, lr=lr, batch_size=batch, weight_decay=weight_decay,
                          schedule="cosine", nesterov=False)
    c.method = ml_collections.ConfigDict(dict(name="ce", num_experts=1))
    return c


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")


def _check_fields(kind: str, fields: dict) -> None:
    if kind == "tau_norm":
        tau = fields["tau_norm"]
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (
                tau >= 0 or tau == -1):
            raise ValueError(f"method.tau_norm={tau!r}; expected a number >= 0, or -1 to "
                             "choose it on method.tau_norm_split")
        grid = tuple(fields["tau_norm_grid"])
        if not grid or any(isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0
                           for t in grid):
            raise ValueError(f"method.tau_norm_grid={grid!r}; expected numbers >= 0")
        if fields["tau_norm_split"] not in SPLITS:
            raise ValueError(f"method.tau_norm_split={fields['tau_norm_split']!r}; expected one "
                             f"of {SPLITS}")
    if kind == "ncm":
        if fields["ncm_features"] not in FEATURE_TYPES:
            raise ValueError(f"method.ncm_features={fields['ncm_features']!r}; expected one of "
                             f"{FEATURE_TYPES}")
        if fields["ncm_distance"] not in DISTANCES:
            raise ValueError(f"method.ncm_distance={fields['ncm_distance']!r}; expected one of "
                             f"{DISTANCES}")


def method_config(kind: str, base: ml_collections.ConfigDict, **fields
                  ) -> ml_collections.ConfigDict:
    """`config.method` of decoupled classifier `kind` on a trunk trained with `base` (a
    `config.method`): base's fields, name=kind, base=base.name and the kind's fields
    (defaults in `_DEFAULTS`, replaceable by `fields`)."""
    _check_kind(kind)
    if base.name in KINDS:
        raise ValueError(f"the joint method is {base.name!r}, a decoupled classifier; expected "
                         "the method that trains the trunk (e.g. 'ce', 'balpoe')")
    clash = sorted(set(base.keys()) & set(_ALL_FIELDS))
    if clash:
        raise ValueError(f"config.method of {base.name!r} already has the field(s) {clash} of "
                         "the decoupled classifiers")
    unknown = sorted(set(fields) - set(_DEFAULTS[kind]))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for {kind!r}; expected some of "
                         f"{sorted(_DEFAULTS[kind])}")
    own = dict(_DEFAULTS[kind], **fields)
    if "tau_norm_grid" in own:
        own["tau_norm_grid"] = tuple(float(t) for t in own["tau_norm_grid"])
    _check_fields(kind, own)
    if "tau_norm" in own:
        own["tau_norm"] = float(own["tau_norm"])
    return ml_collections.ConfigDict(dict(base.to_dict(), name=kind, base=base.name, **own))


def _recipe(c, kind: str, recipe) -> tuple[int, float, int, float]:
    if recipe is not None:
        epochs, lr, reference_batch, weight_decay = recipe
    else:
        dataset = c.data.name
        if dataset not in OFFICIAL_RECIPES:
            raise ValueError(f"no official {kind} recipe for data.name={dataset!r} (official: "
                             f"{sorted(OFFICIAL_RECIPES)}); give recipe=(epochs, lr, "
                             "reference batch size, weight decay)")
        epochs, lr, reference_batch, weight_decay = OFFICIAL_RECIPES[dataset][kind]
    if not (isinstance(epochs, int) and epochs >= 1 and lr > 0 and reference_batch >= 1
            and weight_decay >= 0):
        raise ValueError(f"recipe=({epochs!r}, {lr!r}, {reference_batch!r}, {weight_decay!r}); "
                         "expected (epochs >= 1, lr > 0, reference batch size >= 1, weight "
                         "decay >= 0)")
    return epochs, float(lr), int(reference_batch), float(weight_decay)


def classifier_overrides(c, kind: str, *, recipe=None, batch_size: int | None = None) -> dict:
    """The fields a cRT or LWS run changes (as a stage's overrides): the official recipe
    (`OFFICIAL_RECIPES`, or `recipe` = (epochs, lr, reference batch size, weight decay)) at
    `batch_size` (default: the reference; lr scales linearly), SGD with momentum 0.9 and no
    Nesterov, cosine to 0 without warmup, class-balanced sampling, floor(N / B) steps per epoch
    (the official `epoch_steps`), no Mixup, no periodic evaluation."""
    epochs, lr, reference_batch, weight_decay = _recipe(c, kind, recipe)
    batch = reference_batch if batch_size is None else int(batch_size)
    return {
        "num_epochs": epochs, "batch_size": batch, "mixup_alpha": 0.0, "mixup_epochs": -1,
        "data": {"sampler": "class_balanced", "last_batch": "drop"},
        "optimizer": {"lr": lr, "reference_batch_size": reference_batch, "momentum": 0.9,
                      "nesterov": False, "weight_decay": weight_decay, "lr_multipliers": (),
                      "trainable": ""},
        "schedule": {"name": "cosine", "warmup_epochs": 0, "decay_epochs": ()},
        "eval": {"every_epochs": 0}, "checkpoint": {"every_epochs": epochs}}


def _check_head(c, kind: str) -> None:
    if kind == "tau_norm" and c.model.head != "linear":
        raise ValueError(f"tau-normalisation needs a linear classifier, but model.head="
                         f"{c.model.head!r} (a cosine head normalises its weights already); set "
                         "model.head='linear' for the joint run")


def _check_val(c, fields: dict) -> None:
    split = fields.get("tau_norm_split", "val")
    no_val = c.data.name in ("cifar10_lt", "cifar100_lt", "inaturalist2018") or (
        c.data.get("val_list", "") == "none")
    if split == "val" and fields.get("tau_norm", -1.0) < 0 and no_val:
        raise ValueError(f"tau_norm_split='val', but data.name={c.data.name!r} has no val split; "
                         "choose tau_norm_split='test' (what the official code does where val "
                         "is the test set) or 'train', or a fixed tau_norm >= 0")


def add_stage(c: ml_collections.ConfigDict, kind: str, *, recipe=None,
              batch_size: int | None = None, **fields) -> ml_collections.ConfigDict:
    """Makes `c` (a config whose method trains the trunk, with or without stages) a decoupled
    classifier `kind` after it. In place; returns `c`.

    A single-run `c` becomes the stage 'joint'; the stages of a staged `c` stay, each told the
    joint method's name. 'crt' and 'lws' add a stage of that name (`init_from` the last stage;
    `classifier_overrides(recipe, batch_size)`); 'tau_norm' and 'ncm' set `config.finish`.
    `fields` are the kind's method fields (`method_config`).
    """
    _check_kind(kind)
    if c.get("finish", ""):
        raise ValueError(f"config.finish={c.finish!r} already ends this config; a decoupled "
                         "classifier follows a config that trains the trunk")
    _check_head(c, kind)
    base = c.method
    method = method_config(kind, base, **fields)
    if kind == "tau_norm":
        _check_val(c, method.to_dict())
    order = tuple(c.get("stage_order", ()))
    if not order:
        order = (JOINT_STAGE,)
        c.stage_order = order
        c.stages = ml_collections.ConfigDict({JOINT_STAGE: {"method": {"name": base.name}}})
    else:
        for name in order:
            stage = c.stages[name]
            if "method" not in stage:
                stage.method = ml_collections.ConfigDict()
            stage.method.name = base.name
    c.method = method
    if kind in TRAINED_KINDS:
        overrides = classifier_overrides(c, kind, recipe=recipe, batch_size=batch_size)
        overrides.update({"init_from": order[-1], "method": {"name": kind}})
        c.stages[kind] = ml_collections.ConfigDict(overrides)
        c.stage_order = order + (kind,)
    else:
        if recipe is not None or batch_size is not None:
            raise ValueError(f"{kind!r} trains nothing; recipe and batch_size are for "
                             f"{TRAINED_KINDS}")
        c.finish = kind
    return c


def from_workdir(c: ml_collections.ConfigDict, kind: str, workdir: str, *, recipe=None,
                 batch_size: int | None = None) -> ml_collections.ConfigDict:
    """Makes `c` (the config of the finished run in `workdir`, as its config file gives it) a
    single cRT or LWS run initialised from that run (`model.init_checkpoint`). In place;
    returns `c`. `check_base_workdir(c)` then compares the model with the workdir's."""
    if kind not in TRAINED_KINDS:
        raise ValueError(f"kind={kind!r}: only {TRAINED_KINDS} train a run of their own; "
                         f"{FINISHED_KINDS} are finish steps after the joint stage (add_stage)")
    if c.get("stage_order", ()):
        raise ValueError(f"config.stage_order={tuple(c.stage_order)}: from_workdir makes one "
                         "run; use add_stage for a staged config")
    if not workdir:
        raise ValueError("workdir is empty; expected a finished single-run ltx workdir")
    overrides = classifier_overrides(c, kind, recipe=recipe, batch_size=batch_size)
    c.method = method_config(kind, c.method)
    for key, value in overrides.items():
        if isinstance(value, dict):
            c[key].update(value)
        else:
            c[key] = value
    c.model.init_checkpoint = workdir
    return c


# Model fields that do not change the trunk's variables.
_MOVABLE_MODEL_KEYS = ("init_checkpoint", "expert_strategy", "dtype")
# Data fields that choose the training images (the classifier is re-balanced on the same ones).
_TRAINING_SET_KEYS = ("name", "imbalance_ratio", "profile", "subset_seed", "train_list")


def check_base_workdir(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Raises ValueError when `model.init_checkpoint` of a `from_workdir` config is not a
    finished single run (or an `ltx-import` workdir: an official PyTorch joint model) of the
    same trunk, training images and joint method; returns `c`."""
    from ltx import config_lib, files  # Local: configs need not import the trainer's modules.
    workdir = c.model.init_checkpoint
    if not any(files.isfile(files.join(workdir, name))
               for name in ("final_metrics.json", "import_report.json")):
        raise ValueError(f"model.init_checkpoint={workdir!r} is neither a finished ltx run (no "
                         "final_metrics.json) nor an ltx-import workdir (no import_report.json);"
                         " train the joint run first")
    saved = config_lib.from_json(files.read_json(files.join(workdir, "config.json")))
    given = config_lib.from_json(json.loads(c.to_json_best_effort()))  # As config.json holds it.
    if saved.get("stage_order", ()):
        raise ValueError(f"model.init_checkpoint={workdir!r} holds the stages "
                         f"{tuple(saved.stage_order)}; give the directory of its last stage, "
                         f"{files.join(workdir, saved.stage_order[-1])}")
    differences = []
    mine, theirs = given.model.to_dict(), saved.model.to_dict()
    for key in sorted(set(mine) | set(theirs)):
        if key not in _MOVABLE_MODEL_KEYS and mine.get(key) != theirs.get(key):
            differences.append(f"model.{key}: {theirs.get(key)!r} there, {mine.get(key)!r} here")
    for key in _TRAINING_SET_KEYS:
        mine, theirs = given.data.get(key), saved.data.get(key)
        if mine != theirs:
            differences.append(f"data.{key}: {theirs!r} there, {mine!r} here")
    if saved.method.name != c.method.base:
        differences.append(f"method: {saved.method.name!r} there, base {c.method.base!r} here")
    if differences:
        raise ValueError(f"model.init_checkpoint={workdir!r} was trained with another trunk "
                         f"than this config's: {'; '.join(differences)} (give the config the "
                         "arguments of that run)")
    return c
