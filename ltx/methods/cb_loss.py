"""Class-balanced loss (Cui et al., CVPR 2019): softmax, sigmoid and focal losses re-weighted by
the inverse effective number of samples. See docs/methods/cb_loss.md.

Three registry names, one per loss type: 'cb_softmax', 'cb_sigmoid', 'cb_focal'. The loss type is
not a free hyperparameter of one method: it decides the head's starting bias (the sigmoid losses
add -log(C - 1), below), what the logits mean, and the row a comparison table prints ("CB-Focal"
in the papers that quote it), so each gets its own name, workdir label and configs.

Recipe (official code `richardaecn/class-balanced-loss`, TensorFlow: `src/cifar_main.py`,
`src/model_base.py`, `cifar_im_trainval_cb.sh`):
- weights w_c = (1 - beta) / (1 - beta^n_c), normalised to sum to C (`cifar_main.py: main`;
  `ltx.losses.drw_class_weights`); beta 0.9999 in the class-balanced script (the argparse default
  0.0 gives all-ones weights, the unweighted baseline);
- 'softmax': (1/B) sum_i w_{y_i} CE(z_i, y_i) (`tf.losses.softmax_cross_entropy` with per-example
  weights, whose default reduction divides by the number of non-zero weights, i.e. B);
- 'sigmoid': (1/B) sum_i w_{y_i} sum_c BCE(z_ic, [y_i = c]) (summed over classes, divided by the
  number of positive labels, B);
- 'focal': the same with each binary term times (1 - p_t)^gamma, p_t the sigmoid probability of
  the binary target (`cifar_main.py: focal_loss`); gamma 1.0 (script and argparse default);
- sigmoid and focal start the last layer's bias at -log(C - 1) (`model_base.py:
  _fully_connected`), so every class starts at sigmoid probability 1/C;
- CIFAR: ResNet-32, linear head, SGD momentum 0.9 (no Nesterov) lr 0.1 @ 128, weight decay 2e-4,
  warmup 5, x0.01 at 160 and again at 180, 200 epochs, crop (pad 4) + flip (`set_schedule`).

Deferred re-weighting (`drw_epoch`): the weights apply from that 0-indexed epoch on, all ones
before (LDAM-DRW's DRW, which uses exactly these weights with beta 0.9999 from epoch 160).
`drw_epoch=0`, the default, is Cui et al.'s loss from the start. LDAM-DRW's "CE + DRW" divides the
weighted sum by sum_i w_{y_i} (PyTorch's weighted mean), not by B: `reduction='weights'`.

Code vs ltx: the official code initialises the bias at -log(C - 1) and exempts it from weight
decay; ltx adds the constant -log(C - 1) to every logit (`LogitOffset`, no parameters) on top of
the linear head's usual bias, which is decayed like every parameter. Softmax, argmax and so every
evaluation are unchanged by a constant; the sigmoid losses start (up to that small bias) where
the official ones do.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltx import losses
from ltx.losses import input_checks as checks
from ltx.losses.class_balanced import (REDUCTIONS, cb_focal_loss,  # noqa: F401
                                       cb_sigmoid_loss, cb_softmax_loss)
from ltx.methods import base
from ltx.models.wrappers import TrunkWrapper

LOSS_TYPES = ("softmax", "sigmoid", "focal")


# -- the model addition: the sigmoid losses' starting bias -------------------------------------

def sigmoid_bias(num_classes: int) -> float:
    """-log(C - 1): the official starting bias of the sigmoid losses' last layer, where every
    class has sigmoid probability 1/C (`model_base.py: _fully_connected`)."""
    if num_classes < 2:
        raise ValueError(f"the sigmoid losses need C >= 2 classes, got C = {num_classes}")
    return -math.log(num_classes - 1)


class LogitOffset(TrunkWrapper):
    """The trunk's logits plus a constant: `trunk(x) + offset`, [E, B, C]. No parameters; the
    trunk's variables keep their names."""

    offset: float = 0.0

    def setup(self):
        self.share_trunk_scope()

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        return self.trunk(x, train=train, mask=mask) + jnp.float32(self.offset)


# -- building the method ----------------------------------------------------------------------

def _check_fields(cfg, loss_type: str, counts) -> None:
    name = f"cb_{loss_type}"
    beta = cfg.get("beta", 0.9999)
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ValueError(f"config.method.beta={beta!r}; expected a number in [0, 1) "
                         "(0: all weights 1; the official class-balanced runs use 0.9999)")
    drw_epoch = cfg.get("drw_epoch", 0)
    if not (isinstance(drw_epoch, int) and drw_epoch >= 0):
        raise ValueError(f"config.method.drw_epoch={drw_epoch!r}; expected an integer >= 0 (0: "
                         "class-balanced weights from the start)")
    if loss_type == "focal":
        gamma = cfg.get("gamma", 1.0)
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"config.method.gamma={gamma!r}; expected a number >= 0")
    if loss_type == "softmax" and cfg.get("reduction", "batch") not in REDUCTIONS:
        raise ValueError(f"config.method.reduction={cfg.reduction!r}; expected one of "
                         f"{REDUCTIONS}")
    num_experts = cfg.get("num_experts", 1)
    if not (isinstance(num_experts, int) and num_experts >= 1):
        raise ValueError(f"config.method.num_experts={num_experts!r}; expected an integer >= 1")
    checks.check_counts(counts, name, positive=True)


def _build(loss_type: str, method_config, class_counts) -> dict:
    cfg = method_config
    _check_fields(cfg, loss_type, class_counts)
    counts = np.asarray(class_counts, np.float64)
    beta, drw_epoch = float(cfg.get("beta", 0.9999)), int(cfg.get("drw_epoch", 0))
    weights = losses.drw_schedule(counts, drw_epoch, beta)  # epoch -> [C]
    gamma = float(cfg.get("gamma", 1.0))
    reduction = cfg.get("reduction", "batch")

    def loss(outputs, labels, epoch):
        w = weights(epoch)
        if loss_type == "softmax":
            return cb_softmax_loss(outputs.logits, labels, class_weights=w, reduction=reduction,
                                   where=outputs.mask)
        if loss_type == "sigmoid":
            return cb_sigmoid_loss(outputs.logits, labels, class_weights=w, where=outputs.mask)
        return cb_focal_loss(outputs.logits, labels, gamma=gamma, class_weights=w,
                             where=outputs.mask)

    # The minimiser of a class-weighted softmax CE has logits log(w_c n_c p(x|c)) + const: the
    # model fits the prior proportional to w_c n_c of the weights in force at the end (those of
    # a DRW run that switches before its last epoch). For the sigmoid losses the same prior
    # orders the one-vs-all odds, so the correction is approximate there.
    final_weights = np.asarray(losses.drw_class_weights(counts, beta=beta), np.float64)
    built = dict(num_experts=int(cfg.get("num_experts", 1)), loss=loss,
                 correct_prior=base.lambda_prior_correction(counts * final_weights, 1.0))
    if loss_type != "softmax":
        offset = sigmoid_bias(len(counts))
        built.update(wrap_model=functools.partial(LogitOffset, offset=offset),
                     model_additions=dict(logit_offset=offset))
    return built


build_softmax = functools.partial(_build, "softmax")
build_sigmoid = functools.partial(_build, "sigmoid")
build_focal = functools.partial(_build, "focal")


# -- config helpers ---------------------------------------------------------------------------

def method_config(loss_type: str, *, beta: float = 0.9999, gamma: float = 1.0,
                  drw_epoch: int = 0, reduction: str = "batch",
                  num_experts: int = 1) -> ml_collections.ConfigDict:
    """`config.method` of 'cb_<loss_type>' with the official defaults (beta 0.9999, gamma 1)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {LOSS_TYPES}")
    fields = dict(name=f"cb_{loss_type}", num_experts=num_experts, beta=float(beta),
                  drw_epoch=int(drw_epoch))
    if loss_type == "focal":
        fields["gamma"] = float(gamma)
    if loss_type == "softmax":
        fields["reduction"] = reduction
    return ml_collections.ConfigDict(fields)


def set_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The official CIFAR optimizer on `c`'s schedule: linear head, SGD without Nesterov, weight
    decay 2e-4, the decays x0.01 each (`--learning-rate-multiplier 1 0.01 0.0001`)."""
    c.model.head = "linear"
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 2e-4
    c.schedule.decay_factor = 0.01
    return c


__all__ = ["LOSS_TYPES", "REDUCTIONS", "LogitOffset", "build_focal", "build_sigmoid",
           "build_softmax", "cb_focal_loss", "cb_sigmoid_loss", "cb_softmax_loss",
           "method_config", "set_schedule", "sigmoid_bias"]
