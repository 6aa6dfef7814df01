"""Config helpers of the class-balanced experts (used by configs/*_cbe.py)."""

from __future__ import annotations

import ml_collections

from ltx.methods.cbe.data import DEFAULT_REJECT_SEED, GROUPS as EXPERTS


def method_config(**overrides) -> ml_collections.ConfigDict:
    """`config.method` of the class-balanced experts with the official fusion settings.

    Fields: stage ('baseline' | 'expert'), num_experts (1 per run), reject (True: reject class;
    False: outlier exposure; must equal `data.reject`, `cbe_stages` sets both), oe_weight (0.5,
    outlier exposure), fusion (the reported one), experts (stage names fused, in order),
    kl_iterations, stacking_{steps, lr, weight_decay}, calibration_{epochs, batch_size, lr,
    momentum, weight_decay, lr_step_epochs} (official: SGD 0.1, momentum 0.9, wd 5e-4,
    StepLR(30, 0.1), batch 256), fusion_seed (minibatch order of the calibration,
    cross-fitting folds).
    """
    c = ml_collections.ConfigDict(dict(
        name="cbe", stage="baseline", num_experts=1, reject=True, oe_weight=0.5,
        fusion="joint_calibration", experts=EXPERTS, kl_iterations=200,
        stacking_steps=500, stacking_lr=0.05, stacking_weight_decay=1e-4,
        calibration_epochs=60, calibration_batch_size=256, calibration_lr=0.1,
        calibration_momentum=0.9, calibration_weight_decay=5e-4, calibration_lr_step_epochs=30,
        fusion_seed=0))
    c.update(overrides)
    return c


def add_data_fields(c: ml_collections.ConfigDict, *, open_ratio: int = 16,
                    reject: bool = True) -> ml_collections.ConfigDict:
    """Adds the expert fields to `config.data` (`ltx.methods.cbe.data`); the baseline leaves
    expert_classes and expert_group empty (all classes)."""
    c.data.expert_classes = ()
    c.data.expert_group = ""
    c.data.expert_shot_convention = "cbe"
    c.data.open_ratio = open_ratio
    c.data.reject = reject
    c.data.reject_seed = DEFAULT_REJECT_SEED
    return c


def configure(c: ml_collections.ConfigDict, *, reject: bool, open_ratio: int
              ) -> ml_collections.ConfigDict:
    """Turns a dataset's base config into the class-balanced experts' baseline config: the
    method (`method_config`; soft voting is the reported fusion for outlier-exposure experts,
    which have no reject class), the official linear classifier, SGD without Nesterov, the 'cbe'
    shot groups and the expert data fields (`add_data_fields`)."""
    c.method = method_config()
    if not reject:
        c.method.fusion = "soft_voting"
    c.model.head = "linear"
    c.optimizer.nesterov = False
    c.eval.shot_convention = "cbe"
    return add_data_fields(c, open_ratio=open_ratio)


def num_stages(model_config) -> int:
    """Stages of the trunk (3 for the CIFAR ResNet-32, 4 for the ImageNet ResNets)."""
    from ltx import models  # Local: models import flax; configs only need this function.
    if model_config.name == "resnet32":
        return len(model_config.widths)
    return len(model_config.get("widths", models.IMAGENET_WIDTHS))


def trainable_pattern(model_config, num_learnable: int) -> str:
    """`optimizer.trainable` for the official `--num_learnable` (regex over parameter paths).

    -1: everything ('' = no freezing); 1: the classifier only; 2: the classifier and the official
    extra fc layer, which ltx's ResNets lack, hence also the classifier only; 3 .. 2 + S: the
    classifier and the last num_learnable - 2 of the S stages (the stem stays frozen). The
    classifier is `experts/head/...`; stage i is `stage{i}/...` in the shared trunk or
    `experts/stage{i}/...` in the expert branch, so the pattern does not depend on
    `model.num_shared_stages`.
    """
    stages = num_stages(model_config)
    if isinstance(num_learnable, bool) or not isinstance(num_learnable, int) or not (
            num_learnable == -1 or 1 <= num_learnable <= stages + 2):
        raise ValueError(f"num_learnable={num_learnable!r}; expected -1 (all), 1 (classifier), "
                         f"2 (classifier + fc, here the classifier) or 3..{stages + 2} (classifier"
                         f" + the last 1..{stages} of the {stages} stages)")
    if num_learnable == -1:
        return ""
    head = r"^experts/head/"
    if num_learnable <= 2:
        return head
    last = range(stages - (num_learnable - 2), stages)
    return head + r"|(^|/)stage(" + "|".join(str(i) for i in last) + r")/"


def cbe_stages(c: ml_collections.ConfigDict, *, expert_epochs: int, open_ratios=(16, 16, 16),
               num_learnable=(-1, 3, 1), reject: bool = True, expert_overrides=None,
               per_expert_overrides=None) -> ml_collections.ConfigDict:
    """Adds the stages 'baseline', 'many', 'medium', 'few' and the fusion to `c`.

    `c` is the baseline's config (method `method_config()`, data fields `add_data_fields`). Each
    expert stage starts from the baseline's checkpoint, selects its shot group at build time
    (`data.expert_group`, the training counts and `data.expert_shot_convention`), trains
    `expert_epochs` epochs with open ratio `open_ratios[i]` and `optimizer.trainable` from
    `num_learnable[i]` (official ImageNet-LT: -1, 3, 1), plus `expert_overrides` (all experts;
    e.g. the schedule) and `per_expert_overrides[name]`. `reject` sets `data.reject` and
    `method.reject` together (False: outlier exposure).
    """
    if len(open_ratios) != len(EXPERTS) or len(num_learnable) != len(EXPERTS):
        raise ValueError(f"open_ratios={tuple(open_ratios)} and num_learnable="
                         f"{tuple(num_learnable)}; expected one per expert {EXPERTS}")
    c.data.reject = bool(reject)
    c.method.reject = bool(reject)
    c.stage_order = ("baseline",) + EXPERTS
    c.stages = ml_collections.ConfigDict()
    c.stages.baseline = ml_collections.ConfigDict({"method": {"stage": "baseline"}})
    for name, ratio, learnable in zip(EXPERTS, open_ratios, num_learnable):
        stage = ml_collections.ConfigDict({
            "init_from": "baseline", "num_epochs": expert_epochs,
            "method": {"stage": "expert"},
            "data": {"expert_group": name, "open_ratio": ratio},
            "optimizer": {"trainable": trainable_pattern(c.model, learnable)}})
        for extra in (expert_overrides, (per_expert_overrides or {}).get(name)):
            if extra:
                stage.update(ml_collections.ConfigDict(dict(extra)))
        c.stages[name] = stage
    c.finish = "cbe_fusion"
    return c


# --------------------------------------------------------------------------------------------
# The method.
