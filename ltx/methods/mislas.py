"""MiSLAS: Mixup, label-aware smoothing and shifted BatchNorm (Zhong et al., CVPR 2021).

See docs/methods/mislas.md. Official code `dvlab-research/MiSLAS`: `train_stage1.py`,
`train_stage2.py`, `methods.py` (`mixup_data`, `LabelAwareSmoothing`, `LearnableWeightScaling`)
and `config/<dataset>/*_stage{1_mixup,2_mislas}.yaml`.

Two stages, one registry name ('mislas') with `method.stage`:

- 'mixup' (stage 1): the backbone and a linear classifier trained end to end with plain
  cross-entropy on Mixup batches (`config.mixup_alpha`: 1.0 on CIFAR, 0.2 on the large datasets;
  the trainer mixes, `ltx.data.mixup`).
- 'classifier' (stage 2): started from stage 1 (`init_from`), class-balanced sampling, only the
  classifier and a learnable per-class logit scale (LWS) are optimised, with label-aware
  smoothing. "Shift learning" on BatchNorm: the backbone runs in train mode, so every BatchNorm
  normalises with the batch's statistics and moves its running mean and variance towards the
  class-balanced data, while its scale and bias stay as stage 1 left them (`shift_bn`).

Label-aware smoothing, for class counts n_c sorted n_1 = max ... n_K = min, eps_1 = smooth_head,
eps_K = smooth_tail and u_c = (n_c - n_K) / (n_1 - n_K) in [0, 1]:

    concave: eps_c = eps_K + (eps_1 - eps_K) * sin(pi u_c / 2)
    linear:  eps_c = eps_K + (eps_1 - eps_K) * u_c
    convex:  eps_c = eps_1 + (eps_1 - eps_K) * sin(3 pi / 2 + pi u_c / 2)
    exp:     eps_c = eps_K + (eps_1 - eps_K) * u_c ** power          (the code only)

    L = (1/B) sum_i [ (1 - eps_{y_i}) * (-log p_{i y_i}) + eps_{y_i} * (1/C) sum_c (-log p_ic) ]

with p = softmax(z). The official stage 2 always builds `LabelAwareSmoothing` with its default
shape 'concave'; head classes are smoothed most.

Stage 2, what the official `train_stage2.py` does, and ltx the same:
- the optimizer holds the classifier (lr = lr_factor * lr) and LWS (lr), SGD momentum 0.9, no
  Nesterov, the config's weight decay on both; cosine from lr to 0 over the stage, per epoch,
  no warmup (ltx: `optimizer.lr_multipliers` gives the classifier its factor);
- the backbone's features come under `torch.no_grad()` with the backbone in `train()` mode when
  `shift_bn` (CIFAR-100-LT, ImageNet-LT, iNaturalist, Places-LT) and in `eval()` mode otherwise
  (CIFAR-10-LT): so only the BatchNorm running statistics change, never a weight (ltx: the
  `trainable` rule freezes every other parameter, `RetrainedClassifier` picks the BatchNorm
  mode);
- logits = LWS(classifier(features)) = s * (W f + b), s [C] starting at 1; the evaluation uses
  the same scaled logits.

Code vs ltx: the official stage 2 computes no gradient through the backbone; ltx's step
computes one and throws it away (the frozen parameters get no update, so the result is the same,
at the cost of a backward pass). The official CIFAR runs report the best test epoch; ltx reports
the last. The official class-aware sampler (`datasets/sampler.py`, not in the snapshot read for
ltx; in the decoupling code it comes from, it cycles through a shuffled class list) differs from
ltx's, which draws each class uniformly (`data.sampler='class_balanced'`).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltx import losses
from ltx.losses import input_checks as checks
from ltx.methods import base
from ltx.models.wrappers import TrunkWrapper

STAGES = ("mixup", "classifier")
SHAPES = ("concave", "linear", "convex", "exp")
HEAD_PATTERN = r"^experts/head/"
LWS_NAME = "lws"

# The official stage-2 yaml of each dataset (and CIFAR imbalance ratio): (smooth_head,
# smooth_tail, lr_factor, shift_bn). Every one has lr 0.1, 10 epochs and mixup False.
OFFICIAL_STAGE2 = {
    ("cifar10_lt", 100): (0.3, 0.0, 0.5, False),
    ("cifar10_lt", 50): (0.2, 0.0, 0.2, False),
    ("cifar10_lt", 10): (0.1, 0.0, 0.2, False),
    ("cifar100_lt", 100): (0.4, 0.1, 0.2, True),
    ("cifar100_lt", 50): (0.3, 0.0, 0.1, True),
    ("cifar100_lt", 10): (0.2, 0.0, 0.1, True),
    ("imagenet_lt", None): (0.3, 0.0, 0.05, True),
    ("inaturalist2018", None): (0.3, 0.0, 0.05, True),
    ("places_lt", None): (0.4, 0.1, 0.05, True),
}


def official_stage2(dataset: str, imbalance_ratio: float | None = None) -> tuple:
    """(smooth_head, smooth_tail, lr_factor, shift_bn) of the official stage-2 config of
    `dataset` ('cifar10_lt' and 'cifar100_lt' need `imbalance_ratio` 100, 50 or 10)."""
    cifar = dataset in ("cifar10_lt", "cifar100_lt")
    key = (dataset, int(imbalance_ratio) if cifar and imbalance_ratio is not None else None)
    if key not in OFFICIAL_STAGE2:
        known = sorted(f"{d}" + (f" ratio {r}" if r else "") for d, r in OFFICIAL_STAGE2)
        raise ValueError(f"no official MiSLAS stage-2 config for dataset={dataset!r}, "
                         f"imbalance_ratio={imbalance_ratio!r}; expected one of {known} (or give "
                         "smooth_head, smooth_tail, lr_factor and shift_bn yourself)")
    return OFFICIAL_STAGE2[key]


# -- label-aware smoothing ----------------------------------------------------------------------

def smoothing_values(class_counts, *, smooth_head: float, smooth_tail: float,
                     shape: str = "concave", power: float | None = None) -> np.ndarray:
    """Per-class smoothing eps [C] (float64) of the module docstring's formulas.

    Args:
      class_counts: [C] training images per class (> 0), not all equal.
      smooth_head: eps_1 in [0, 1], the smoothing of the largest class.
      smooth_tail: eps_K in [0, 1], the smoothing of the smallest class.
      shape: 'concave' (the official default), 'linear', 'convex' or 'exp'.
      power: the exponent > 0 of 'exp' (only there).
    """
    fn = "smoothing_values"
    counts = checks.check_counts(class_counts, fn, positive=True)
    if not checks.has_values(counts):
        raise ValueError(f"{fn}: class_counts must be concrete values, got a traced array")
    for name, value in (("smooth_head", smooth_head), ("smooth_tail", smooth_tail)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{fn}: {name}={value!r}; expected a number in [0, 1]")
    if shape not in SHAPES:
        raise ValueError(f"{fn}: shape={shape!r}; expected one of {SHAPES}")
    if shape == "exp":
        if power is None or isinstance(power, bool) or not (
                isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
            raise ValueError(f"{fn}: shape='exp' needs power > 0, got power={power!r}")
    largest, smallest = counts.max(), counts.min()
    if largest == smallest:
        raise ValueError(f"{fn}: every class has {largest:g} images; label-aware smoothing "
                         "interpolates between the largest and the smallest class and needs "
                         "class_counts that differ")
    u = (counts - smallest) / (largest - smallest)
    head, tail = float(smooth_head), float(smooth_tail)
    if shape == "concave":
        return tail + (head - tail) * np.sin(u * np.pi / 2)
    if shape == "linear":
        return tail + (head - tail) * u
    if shape == "convex":
        return head + (head - tail) * np.sin(1.5 * np.pi + u * np.pi / 2)
    return tail + (head - tail) * np.power(u, float(power))


def label_aware_smoothing_loss(logits: jax.Array, labels: jax.Array, *, smoothing,
                               where=None) -> jax.Array:
    """Label-aware smoothing cross-entropy (the official `LabelAwareSmoothing.forward`).

    Args:
      logits: float [B, C] of one model.
      labels: int [B] in [0, C).
      smoothing: [C] per-class eps in [0, 1] (`smoothing_values`); image i uses eps_{y_i}.
      where: optional bool [B]; only these rows count, as if the batch were that smaller one.

    Returns:
      Scalar mean over the batch of (1 - eps_y) * (-log p_y) + eps_y * mean_c(-log p_c),
      float32 or wider.
    """
    fn = "label_aware_smoothing_loss"
    logits = checks.check_logits(logits, fn, (2,), "[B, C]")
    batch, num_classes = logits.shape
    labels = checks.check_labels(labels, fn, batch, num_classes)
    where = checks.check_where(where, fn, batch)
    dtype = checks.compute_dtype(logits)
    eps = checks.as_array(smoothing)
    if eps.shape != (num_classes,):
        raise ValueError(f"{fn}: smoothing must be [C] = [{num_classes}], got shape "
                         f"{tuple(eps.shape)}")
    if checks.has_values(eps) and not np.all((np.asarray(eps) >= 0) & (np.asarray(eps) <= 1)):
        raise ValueError(f"{fn}: smoothing must lie in [0, 1], got values from "
                         f"{float(np.min(eps))} to {float(np.max(eps))}")
    log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    eps_i = onehot @ jnp.asarray(eps, dtype)  # [B]
    nll = -jnp.sum(onehot * log_probs, axis=-1)
    uniform = -jnp.mean(log_probs, axis=-1)
    return checks.batch_mean((1.0 - eps_i) * nll + eps_i * uniform, where)


# -- the stage-2 model ---------------------------------------------------------------------------

class LearnedWeightScaling(nn.Module):
    """Per-class logit scales `s` [C], starting at 1: logits [..., C] -> s * logits (the
    official `LearnableWeightScaling`, whose `learned_norm` is [1, C])."""

    num_classes: int

    @nn.compact
    def __call__(self, logits: jax.Array) -> jax.Array:
        scales = self.param("scales", nn.initializers.ones, (self.num_classes,), jnp.float32)
        return logits * scales


class RetrainedClassifier(TrunkWrapper):
    """The stage-2 model: the stage-1 trunk, whose BatchNorm layers run in train mode during
    training only when `shift_bn` (eval mode otherwise), with LWS on its logits when
    `weight_scaling`.

    `__call__(x, *, train, mask=None)` -> logits [E, B, C]. Which parameters learn is the
    method's `trainable` rule, not this module: in train mode with `shift_bn` the BatchNorm
    running statistics move (the trainer keeps them), without it nothing in the trunk changes.
    The trunk's variables keep their names; LWS lives under 'lws'.
    """

    shift_bn: bool = True
    weight_scaling: bool = True

    def setup(self):
        self.share_trunk_scope()
        if self.weight_scaling:
            self.lws = LearnedWeightScaling(self.trunk.num_classes)

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        logits = self.trunk(x, train=train and self.shift_bn, mask=mask)
        return self.lws(logits) if self.weight_scaling else logits


# -- building the method -------------------------------------------------------------------------

def _number(cfg, name: str, low: float, high: float | None = None) -> float:
    value = cfg.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or value < low or (high is not None and value > high):
        expected = f"a number in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"config.method.{name}={value!r}; expected {expected}")
    return float(value)


def _flag(cfg, name: str) -> bool:
    value = cfg.get(name)
    if not isinstance(value, bool):
        raise ValueError(f"config.method.{name}={value!r}; expected True or False")
    return value


def build(method_config, class_counts) -> dict:
    """MiSLAS. Fields (`method_config` sets them all): stage ('mixup' | 'classifier'),
    smooth_head, smooth_tail, smooth_shape, smooth_power (for 'exp'), shift_bn,
    weight_scaling."""
    cfg = method_config
    stage = cfg.get("stage")
    if stage not in STAGES:
        raise ValueError(f"config.method.stage={stage!r}; expected one of {STAGES}")
    counts = checks.check_counts(class_counts, "mislas", positive=True)
    if stage == "mixup":
        def loss(outputs, labels, epoch):
            del epoch
            return losses.cross_entropy(outputs.logits[0], labels, where=outputs.mask)

        # Cross-entropy on the long-tailed data: the logits carry log pi (lambda 1).
        return dict(num_experts=1, loss=loss,
                    correct_prior=base.lambda_prior_correction(counts, 1.0))

    shape = cfg.get("smooth_shape", "concave")
    if shape not in SHAPES:
        raise ValueError(f"config.method.smooth_shape={shape!r}; expected one of {SHAPES}")
    power = cfg.get("smooth_power", None) if shape == "exp" else None
    eps = smoothing_values(counts, smooth_head=_number(cfg, "smooth_head", 0.0, 1.0),
                           smooth_tail=_number(cfg, "smooth_tail", 0.0, 1.0), shape=shape,
                           power=power)
    eps = jnp.asarray(eps, jnp.float32)
    shift_bn, weight_scaling = _flag(cfg, "shift_bn"), _flag(cfg, "weight_scaling")

    def classifier_loss(outputs, labels, epoch):
        del epoch
        return label_aware_smoothing_loss(outputs.logits[0], labels, smoothing=eps,
                                          where=outputs.mask)

    trainable = HEAD_PATTERN if not weight_scaling else rf"{HEAD_PATTERN}|^{LWS_NAME}/"
    # Class-balanced sampling makes the re-trained classifier balanced (lambda 0).
    return dict(
        num_experts=1, loss=classifier_loss, correct_prior=base.balanced_prior_correction,
        wrap_model=functools.partial(RetrainedClassifier, shift_bn=shift_bn,
                                     weight_scaling=weight_scaling),
        model_additions=dict(frozen_backbone=True, shift_bn=shift_bn,
                             learned_weight_scaling=weight_scaling),
        trainable=trainable)


# -- config helpers --------------------------------------------------------------------------

def method_config(dataset: str | None = None, imbalance_ratio: float | None = None, *,
                  smooth_head: float | None = None, smooth_tail: float | None = None,
                  shift_bn: bool | None = None) -> ml_collections.ConfigDict:
    """`config.method` of MiSLAS, stage 1 ('mixup'), with the stage-2 fields of the official
    config of `dataset` (`OFFICIAL_STAGE2`), each replaceable; without a dataset every stage-2
    field must be given."""
    if dataset is not None:
        head, tail, _, shift = official_stage2(dataset, imbalance_ratio)
        smooth_head = head if smooth_head is None else smooth_head
        smooth_tail = tail if smooth_tail is None else smooth_tail
        shift_bn = shift if shift_bn is None else shift_bn
    missing = [n for n, v in (("smooth_head", smooth_head), ("smooth_tail", smooth_tail),
                              ("shift_bn", shift_bn)) if v is None]
    if missing:
        raise ValueError(f"mislas.method_config: {missing} not given and no dataset to take the "
                         "official values from")
    return ml_collections.ConfigDict(dict(
        name="mislas", num_experts=1, stage="mixup", smooth_head=float(smooth_head),
        smooth_tail=float(smooth_tail), smooth_shape="concave", smooth_power=1.0,
        shift_bn=bool(shift_bn), weight_scaling=True))


def set_stages(c: ml_collections.ConfigDict, *, lr_factor: float, epochs: int = 10,
               lr: float = 0.1) -> ml_collections.ConfigDict:
    """MiSLAS's two stages on `c` (whose own fields are stage 1's): 'mixup', then 'classifier'
    started from it: `epochs` of class-balanced sampling without Mixup, SGD from `lr` (LWS) and
    `lr_factor * lr` (the classifier) at stage 1's batch size and weight decay, momentum 0.9 without
    Nesterov, cosine to 0 without warmup. In place; returns `c`."""
    c.stage_order = ("mixup", "classifier")
    c.stages.mixup = ml_collections.ConfigDict()
    c.stages.classifier = ml_collections.ConfigDict({
        "init_from": "mixup", "num_epochs": epochs, "mixup_alpha": 0.0,
        "method": {"stage": "classifier"}, "data": {"sampler": "class_balanced"},
        "optimizer": {"lr": lr, "reference_batch_size": c.batch_size, "momentum": 0.9,
                      "nesterov": False, "lr_multipliers": ((HEAD_PATTERN, lr_factor),)},
        "schedule": {"name": "cosine", "warmup_epochs": 0, "decay_epochs": ()},
        "eval": {"every_epochs": 0}, "checkpoint": {"every_epochs": epochs}})
    return c
