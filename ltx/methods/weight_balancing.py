"""Weight balancing (Alshammari et al., CVPR 2022): weight decay, then MaxNorm and a class-balanced
loss on the classifier. See docs/methods/weight_balancing.md.

Official code `ShadeAlsha/LTR-weight-balancing` (CIFAR-100-LT demos): `demo1_first-stage-training`
and `demo2_second-stage-training` (notebooks and their .py exports), `utils/trainval.py`
(`train_model`), `utils/regularizers.py` (`MaxNorm_via_PGD`), `utils/class_balanced_loss.py`
(`CB_loss`).

Two stages, one registry name ('weight_balancing') with `method.stage`:

- 'features' (stage 1): the whole network with plain cross-entropy and a large, tuned weight
  decay (5e-3 on CIFAR-100-LT; SGD lr 0.01, momentum 0.9, batch 64, cosine over 320 epochs).
- 'classifier' (stage 2): started from stage 1, only the classifier (weight and bias) learns,
  with the class-balanced loss, weight decay 0.1 and the MaxNorm constraint (10 epochs, lr 0.01,
  cosine). The rest of the network is frozen but runs in train mode, as the official
  `model.train()` does: BatchNorm normalises with batch statistics and its running statistics
  keep moving on the (long-tailed, shuffled) training stream.

MaxNorm (`max_norm`): each class's weight vector w_c (a row of the official fc weight [C, F], a
column of ltx's kernel [F, C]) is projected into the ball of radius r:

    w_c <- w_c * min(1, r / ||w_c||_2),
    r = min_c ||w_c^0|| + thresh * (max_c ||w_c^0|| - min_c ||w_c^0||)

r is fixed at the start of stage 2 from the stage-1 classifier w^0 (`setPerLayerThresh`;
thresh 0.1). The bias is never projected (its radius is infinite in the official code). As an
optax transformation, the update becomes project(params + update) - params.

When: the official `train_model` calls `MaxNorm_via_PGD.PGD` once per epoch, after the epoch's
last optimizer step (`every='epoch'`, ltx's default). Textbook projected gradient descent
projects after every step (`every='step'`).

Class-balanced loss, the official `CB_loss(..., 'softmax', beta=0.9999, gamma=2.0)`: the
effective-number weights w_c = (1 - beta) / (1 - beta^n_c) normalised to sum to C (those of
`ltx.losses.drw_class_weights`), and a binary cross-entropy on the softmax probabilities p,
averaged over all B x C entries, each weighted by its image's w_{y_i} (PyTorch's
`F.binary_cross_entropy(softmax(z), onehot, weight)`, whose logs are clamped at -100):

    L = (1 / (B C)) sum_i w_{y_i} sum_c -[t_ic log p_ic + (1 - t_ic) log(1 - p_ic)]

(`loss_form='official'`). Cui et al.'s own softmax form, the class-weighted cross-entropy, is
`loss_form='cross_entropy'` (`ltx.losses.class_balanced.cb_softmax_loss`). gamma only matters for the
focal loss, which the demo does not use.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ltx import losses, optim
from ltx.losses import input_checks as checks
from ltx.losses.class_balanced import cb_softmax_loss
from ltx.methods import base

STAGES = ("features", "classifier")
LOSS_FORMS = ("official", "cross_entropy")
MAX_NORM_EVERY = ("epoch", "step")
HEAD_PATTERN = r"^experts/head/"
# The classifier weight that MaxNorm constrains; its bias has no constraint.
KERNEL_PATTERN = r"^experts/head/dense/kernel$"
# PyTorch's binary_cross_entropy clamps each log at -100.
LOG_CLAMP = -100.0


# -- the class-balanced loss ------------------------------------------------------------------

def cb_softmax_bce_loss(logits: jax.Array, labels: jax.Array, *, class_weights,
                        where=None) -> jax.Array:
    """The official `CB_loss` with loss_type 'softmax': binary cross-entropy on the softmax
    probabilities, weighted by the target class's weight, mean over every entry.

    Args:
      logits: float [B, C] of one model.
      labels: int [B] in [0, C).
      class_weights: [C] per-class weights (`ltx.losses.drw_class_weights`).
      where: optional bool [B]; only these rows count, as if the batch were that smaller one
        (the mean is then over their B' x C entries).

    Returns:
      Scalar (1/(B C)) sum_i w_{y_i} sum_c BCE(p_ic, [y_i = c]) with logs clamped at -100,
      float32 or wider.
    """
    fn = "cb_softmax_bce_loss"
    logits = checks.check_logits(logits, fn, (2,), "[B, C]")
    batch, num_classes = logits.shape
    labels = checks.check_labels(labels, fn, batch, num_classes)
    where = checks.check_where(where, fn, batch)
    dtype = checks.compute_dtype(logits)
    weights = checks.check_class_weights(class_weights, fn, num_classes, dtype)
    if weights is None:
        raise ValueError(f"{fn}: class_weights is None; expected [C] weights")
    log_p = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
    p = jnp.exp(log_p)
    # log(1 - p) from 1 - p where it is positive; where p rounds to 1 PyTorch's clamp gives
    # -100, and the jnp.where keeps log(0) (and its infinite gradient) out of the graph.
    rest = 1.0 - p
    positive = rest > 0
    log_rest = jnp.where(positive, jnp.log(jnp.where(positive, rest, 1.0)), LOG_CLAMP)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    bce = -(onehot * jnp.maximum(log_p, LOG_CLAMP) + (1.0 - onehot) * jnp.maximum(log_rest,
                                                                                  LOG_CLAMP))
    per_image = (onehot @ weights) * jnp.mean(bce, axis=-1)  # [B]
    return checks.batch_mean(per_image, where)


# -- MaxNorm --------------------------------------------------------------------------------

def _class_norms(kernel: jax.Array) -> jax.Array:
    """||w_c||_2 of a classifier kernel [F, C] or [E, F, C] (ltx's layout: features first) ->
    [1, C] or [E, 1, C]."""
    if kernel.ndim not in (2, 3):
        raise ValueError(f"MaxNorm: a classifier kernel is [F, C] or [E, F, C], got shape "
                         f"{tuple(kernel.shape)}")
    return jnp.sqrt(jnp.sum(jnp.square(kernel), axis=-2, keepdims=True))


def max_norm_radius(kernel: jax.Array, thresh: float) -> jax.Array:
    """The official per-layer radius of a kernel [F, C] or [E, F, C]: min_c ||w_c|| + thresh *
    (max_c ||w_c|| - min_c ||w_c||), per expert -> [1, 1] or [E, 1, 1]."""
    norms = _class_norms(kernel)
    low = jnp.min(norms, axis=-1, keepdims=True)
    high = jnp.max(norms, axis=-1, keepdims=True)
    return low + thresh * (high - low)


def max_norm_project(kernel: jax.Array, radius: jax.Array) -> jax.Array:
    """Scales each class column w_c of `kernel` [F, C] / [E, F, C] whose norm exceeds `radius`
    (broadcastable to [E, 1, 1]) down to norm `radius`; the others are returned unchanged."""
    norms = _class_norms(kernel)
    over = norms > radius
    return jnp.where(over, kernel * (radius / jnp.where(over, norms, 1.0)), kernel)


class MaxNormState(NamedTuple):
    """count: int32 [], the updates made so far; radii: the radius [E, 1, 1] of each
    constrained parameter, in the parameters' flattening order (a tuple, not a dict keyed by
    path: checkpoints store the state's keys as names, and paths hold '/')."""

    count: jax.Array
    radii: Any


def _check_max_norm(thresh, every, steps_per_epoch) -> None:
    if isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not (
            math.isfinite(thresh) and thresh >= 0):
        raise ValueError(f"MaxNorm thresh={thresh!r}; expected a finite number >= 0 (0: the "
                         "smallest class norm of the stage-1 classifier is every class's cap)")
    if every not in MAX_NORM_EVERY:
        raise ValueError(f"MaxNorm every={every!r}; expected one of {MAX_NORM_EVERY}")
    if not steps_per_epoch > 0:
        raise ValueError(f"MaxNorm steps_per_epoch={steps_per_epoch!r}; expected > 0")


def max_norm(thresh: float, *, every: str = "epoch", steps_per_epoch: float = 1.0,
             pattern: str = KERNEL_PATTERN) -> optax.GradientTransformation:
    """MaxNorm as an optax transformation (weight balancing's `MaxNorm_via_PGD`).

    Chain it last: its update is `project(params + u) - params` for the parameters whose path
    matches `pattern` (classifier kernels [E, F, C]), `u` elsewhere. `init` fixes each matching
    kernel's radius from the parameters it is given (`max_norm_radius`; in a stage started
    from a checkpoint these are the loaded ones). With `every='epoch'` the projection is made
    on the step that completes an epoch (the 0-indexed step s with floor((s + 1) / spe) >
    floor(s / spe), spe = `steps_per_epoch`), as the official loop does after each epoch;
    `every='step'` projects after every step.
    """
    _check_max_norm(thresh, every, steps_per_epoch)

    def matching(tree):
        return [(optim.parameter_path(path), leaf)
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
                if re.search(pattern, optim.parameter_path(path))]

    def init_fn(params):
        found = matching(params)
        if not found:
            names = [optim.parameter_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(
                params)]
            raise ValueError(f"MaxNorm pattern {pattern!r} matches no trainable parameter; "
                             f"parameters look like {names[:3]}")
        return MaxNormState(count=jnp.zeros((), jnp.int32),
                            radii=tuple(max_norm_radius(leaf, thresh) for _, leaf in found))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("MaxNorm needs the parameters (optax's update(..., params))")
        step = state.count
        project = jnp.bool_(True) if every == "step" else (
            jnp.floor((step + 1) / steps_per_epoch) > jnp.floor(step / steps_per_epoch))
        index = {name: i for i, (name, _) in enumerate(matching(params))}
        if len(index) != len(state.radii):
            raise ValueError(f"MaxNorm state holds {len(state.radii)} radii but the parameters "
                             f"have {len(index)} matching {pattern!r}")

        def constrain(path, u, p):
            name = optim.parameter_path(path)
            if name not in index:
                return u
            new = p + u
            projected = max_norm_project(new, state.radii[index[name]].astype(new.dtype))
            return jnp.where(project, projected - p, u)

        updates = jax.tree_util.tree_map_with_path(constrain, updates, params)
        return updates, MaxNormState(count=step + 1, radii=state.radii)

    return optax.GradientTransformation(init_fn, update_fn)


# -- building the method ----------------------------------------------------------------------

def _check(cfg, name: str, ok, expected: str):
    value = cfg.get(name)
    if isinstance(value, bool) or not ok(value):
        raise ValueError(f"config.method.{name}={value!r}; expected {expected}")
    return value


def build(method_config, class_counts) -> dict:
    """Weight balancing. Fields (`method_config` sets them all): stage ('features' |
    'classifier'), beta (0.9999), loss_form ('official' | 'cross_entropy'), max_norm_thresh
    (0.1), max_norm_every ('epoch' | 'step')."""
    cfg = method_config
    stage = cfg.get("stage")
    if stage not in STAGES:
        raise ValueError(f"config.method.stage={stage!r}; expected one of {STAGES}")
    counts = checks.check_counts(class_counts, "weight_balancing", positive=True)
    if stage == "features":
        def loss(outputs, labels, epoch):
            del epoch
            return losses.cross_entropy(outputs.logits[0], labels, where=outputs.mask)

        return dict(num_experts=1, loss=loss,
                    correct_prior=base.lambda_prior_correction(counts, 1.0))

    number = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    beta = float(_check(cfg, "beta", lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)"))
    form = cfg.get("loss_form")
    if form not in LOSS_FORMS:
        raise ValueError(f"config.method.loss_form={form!r}; expected one of {LOSS_FORMS}")
    thresh = float(_check(cfg, "max_norm_thresh", lambda v: number(v) and v >= 0,
                          "a number >= 0"))
    every = cfg.get("max_norm_every")
    if every not in MAX_NORM_EVERY:
        raise ValueError(f"config.method.max_norm_every={every!r}; expected one of "
                         f"{MAX_NORM_EVERY}")
    weights_np = np.asarray(losses.drw_class_weights(counts, beta=beta), np.float64)
    weights = jnp.asarray(weights_np, jnp.float32)

    def classifier_loss(outputs, labels, epoch):
        del epoch
        if form == "official":
            return cb_softmax_bce_loss(outputs.logits[0], labels, class_weights=weights,
                                       where=outputs.mask)
        return cb_softmax_loss(outputs.logits[0], labels, class_weights=weights,
                               where=outputs.mask)

    def constraint(steps_per_epoch: float) -> optax.GradientTransformation:
        return max_norm(thresh, every=every, steps_per_epoch=steps_per_epoch)

    # As for the class-balanced loss (ltx.methods.cb_loss): the weighted loss fits a prior
    # proportional to w_c n_c; MaxNorm and weight decay only shrink the classifier further, so
    # the correction is approximate.
    return dict(num_experts=1, loss=classifier_loss, trainable=HEAD_PATTERN,
                update_constraint=constraint,
                correct_prior=base.lambda_prior_correction(counts * weights_np, 1.0))


# -- config helpers -------------------------------------------------------------------------

def method_config(*, beta: float = 0.9999, loss_form: str = "official",
                  max_norm_thresh: float = 0.1,
                  max_norm_every: str = "epoch") -> ml_collections.ConfigDict:
    """`config.method` of weight balancing, stage 1 ('features'), with the official stage-2
    values (demo2: beta 0.9999, thresh 0.1, MaxNorm once per epoch)."""
    return ml_collections.ConfigDict(dict(
        name="weight_balancing", num_experts=1, stage="features", beta=float(beta),
        loss_form=loss_form, max_norm_thresh=float(max_norm_thresh),
        max_norm_every=max_norm_every))


def set_stages(c: ml_collections.ConfigDict, *, epochs: int = 10, lr: float = 0.01,
               weight_decay: float = 0.1) -> ml_collections.ConfigDict:
    """Weight balancing's two stages on `c` (whose own fields are stage 1's): 'features', then
    'classifier' started from it: `epochs` of the class-balanced loss with MaxNorm on the
    classifier alone, SGD `lr` (momentum 0.9, no Nesterov) with `weight_decay`, cosine to 0
    without warmup, stage 1's batch size and sampler (demo2). In place; returns `c`."""
    c.stage_order = ("features", "classifier")
    c.stages.features = ml_collections.ConfigDict()
    c.stages.classifier = ml_collections.ConfigDict({
        "init_from": "features", "num_epochs": epochs, "method": {"stage": "classifier"},
        "optimizer": {"lr": lr, "reference_batch_size": c.batch_size, "momentum": 0.9,
                      "nesterov": False, "weight_decay": weight_decay},
        "schedule": {"name": "cosine", "warmup_epochs": 0, "decay_epochs": ()},
        "eval": {"every_epochs": 0}, "checkpoint": {"every_epochs": epochs}})
    return c
