"""Config helpers of ACE (used by configs/*_ace.py): the method fields, recipe and epochs."""

from __future__ import annotations

import math

import ml_collections

from ltx.methods.ace import THRESHOLDS, _thresholds  # noqa: F401 (THRESHOLDS for configs)



def method_config(thresholds, lr_scaling: str = "linear") -> ml_collections.ConfigDict:
    """`config.method` of ACE with these planner thresholds."""
    thresholds = _thresholds(thresholds)
    return ml_collections.ConfigDict(dict(
        name="ace", num_experts=1 + len(thresholds), thresholds=thresholds,
        lr_scaling=lr_scaling))


def set_recipe(c: ml_collections.ConfigDict, *, thresholds, max_epoch: int, unmix_epoch: int,
               lr: float, decay_epochs, warmup_epochs: int, mixup_alpha: float,
               num_shared_stages: int) -> ml_collections.ConfigDict:
    """ACE's method, trunk split and schedule on a config (in place; returns it).

    ACE runs epochs 1 .. max_epoch + unmix_epoch (1-indexed) and mixes the epochs < max_epoch,
    so the last unmix_epoch + 1 are mixup-free: `num_epochs = max_epoch + unmix_epoch` and, with
    Mixup, `mixup_epochs = max_epoch - 1` (0-indexed epochs below it are mixed). SGD with
    momentum 0.9 and Nesterov (Bag of Tricks' `get_optimizer`), the learning rate times 0.1 at
    each of `decay_epochs` (0-indexed), ltx's linear warmup over `warmup_epochs`. The official
    loop calls `scheduler.step()` at the start of each 1-indexed epoch and its `WarmupMultiStepLR`
    is not shipped, so the exact epoch of each change (possibly one earlier) and the warmup
    curve are unverified.
    """
    c.method = method_config(thresholds)
    c.model.head = "lws"
    c.model.num_shared_stages = num_shared_stages
    c.num_epochs = max_epoch + unmix_epoch
    c.mixup_alpha = mixup_alpha
    c.mixup_epochs = max(max_epoch - 1, 0) if mixup_alpha > 0 else -1
    c.optimizer.lr = lr
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.schedule.name = "multistep"
    c.schedule.warmup_epochs = warmup_epochs
    c.schedule.decay_epochs = tuple(decay_epochs)
    c.schedule.decay_factor = 0.1
    c.eval.shot_convention = "ace"
    return c


def scaled_epoch(epoch: int, *, num_epochs: int, reference_epochs: int) -> int:
    """`epoch` of a `reference_epochs` schedule moved to `num_epochs`, rounded, at least 1."""
    return max(int(math.floor(epoch * num_epochs / reference_epochs + 0.5)), 1)
