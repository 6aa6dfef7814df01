"""SGD as in the PyTorch references, and learning-rate schedules given in epochs.

`torch.optim.SGD(momentum=m, nesterov=n, weight_decay=wd)` adds wd * p to the gradient before the
momentum buffer (coupled decay, on every parameter including BatchNorm and biases) and multiplies
by the learning rate last; `optax.chain(add_decayed_weights(wd), sgd(lr, m, nesterov))` is the
same update step for step, including when the learning rate changes.

The references step their schedules once per epoch (LambdaLR / MultiStepLR / CosineAnnealingLR
stepped at epoch end), so by default the learning rate is constant within an epoch:
`granularity='epoch'`. `granularity='step'` evaluates the same curve at fractional epochs.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("multistep", "cosine", "constant")


def epoch_factor(epoch, *, name: str, num_epochs: float, warmup_epochs: float = 0,
                 decay_epochs=(), decay_factor: float = 0.1):
    """Learning-rate multiplier at a (possibly fractional) 0-indexed epoch.

    - warmup (LDAM-DRW, RIDE, SADE, BalPoE): (epoch + 1) / warmup_epochs while epoch < warmup, so
      lr * 0.2, 0.4, ..., 1.0 over the first five epochs;
    - 'multistep': times decay_factor for each boundary in decay_epochs already reached
      (epoch >= boundary). LDAM-DRW/RIDE CIFAR: (160, 180) x 0.01; SADE/BalPoE: (160, 180) x 0.1;
    - 'cosine': 0.5 (1 + cos(pi (epoch - warmup) / (num_epochs - warmup))) after warmup
      (CosineAnnealingLR with T_max = num_epochs, eta_min 0, when warmup is 0);
    - 'constant'.
    Works on Python floats and on jnp scalars (inside an optax schedule).
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule name={name!r}; expected one of {SCHEDULES}")
    if name == "multistep":
        factor = 1.0
        for boundary in decay_epochs:
            factor = factor * jnp.where(epoch >= boundary, decay_factor, 1.0)
    elif name == "cosine":
        span = max(num_epochs - warmup_epochs, 1e-12)
        progress = jnp.clip((epoch - warmup_epochs) / span, 0.0, 1.0)
        factor = 0.5 * (1.0 + jnp.cos(math.pi * progress))
    else:
        factor = 1.0
    if warmup_epochs > 0:
        factor = jnp.where(epoch < warmup_epochs,
                           jnp.minimum((epoch + 1.0) / warmup_epochs, 1.0), factor)
    return factor


def learning_rate_schedule(schedule_config, *, base_lr: float, num_epochs: float,
                           steps_per_epoch: float) -> optax.Schedule:
    """optax schedule (step -> lr) from `config.schedule`.

    Args:
      schedule_config: fields name, warmup_epochs, decay_epochs, decay_factor, granularity.
      base_lr: the learning rate after warmup.
      num_epochs: training length in epochs.
      steps_per_epoch: steps of one epoch, `ltx.data.pipeline.Epochs.steps_per_epoch`:
        ceil(N / B) as the official loaders count (fractional with `data.last_batch='stream'`).
        With granularity 'epoch' the factor changes at the first step of an epoch, e.g. 85 e on
        CIFAR-100-LT IR 100 at batch 128.
    """
    cfg = schedule_config
    if cfg.granularity not in ("epoch", "step"):
        raise ValueError(f"schedule.granularity={cfg.granularity!r}; expected 'epoch' or 'step'")
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch={steps_per_epoch}; expected > 0")
    for boundary in cfg.decay_epochs:
        if not 0 < boundary <= num_epochs:
            raise ValueError(f"schedule.decay_epochs contains {boundary}; expected epochs in "
                             f"(0, {num_epochs}]")

    def schedule(step):
        epoch = step / steps_per_epoch
        if cfg.granularity == "epoch":
            epoch = jnp.floor(epoch)
        return base_lr * epoch_factor(
            epoch, name=cfg.name, num_epochs=num_epochs, warmup_epochs=cfg.warmup_epochs,
            decay_epochs=tuple(cfg.decay_epochs), decay_factor=cfg.decay_factor)

    return schedule


def base_learning_rate(optimizer_config, batch_size: int) -> float:
    """`optimizer.lr`, scaled linearly when `optimizer.reference_batch_size` is set.

    The reference recipes fix (lr, batch); a run with another global batch keeps lr / batch by
    setting `reference_batch_size` to the recipe's batch (0 = use `lr` as given).
    """
    cfg = optimizer_config
    reference = cfg.get("reference_batch_size", 0)
    if reference < 0:
        raise ValueError(f"optimizer.reference_batch_size={reference}; expected >= 0 (0 = off)")
    return cfg.lr * (batch_size / reference if reference else 1.0)


def parameter_path(path) -> str:
    """'/'-joined names of a pytree key path, e.g. 'experts/head/kernel'."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def lr_multipliers(params, rules) -> object:
    """A pytree like `params` of per-parameter learning-rate multipliers.

    `rules` is a sequence of (regex, multiplier); a parameter takes the multiplier of the first
    regex found (`re.search`) in its path (`parameter_path`), else 1. A regex that matches no
    parameter raises ValueError, since a typo would silently train at the wrong rate.
    """
    rules = [(str(pattern), float(mult)) for pattern, mult in rules]
    used = set()

    def multiplier(path, _):
        name = parameter_path(path)
        for pattern, mult in rules:
            if re.search(pattern, name):
                used.add(pattern)
                return mult
        return 1.0

    tree = jax.tree_util.tree_map_with_path(multiplier, params)
    unused = [pattern for pattern, _ in rules if pattern not in used]
    if unused:
        names = [parameter_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        raise ValueError(f"optimizer.lr_multipliers pattern(s) {unused} match no parameter; "
                         f"parameters look like {names[:3]} ... {names[-2:]}")
    return tree


def scale_by_lr_multipliers(rules) -> optax.GradientTransformation:
    """Multiplies each update by its parameter's multiplier (PyTorch param groups' lr).

    Placed after SGD this is exact: PyTorch multiplies the momentum buffer by the group's lr last.
    """

    def init_fn(params):
        lr_multipliers(params, rules)  # Validates the patterns once, on the real tree.
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        mults = lr_multipliers(updates, rules)
        return jax.tree.map(lambda u, m: u if m == 1.0 else u * m, updates, mults), state

    return optax.GradientTransformation(init_fn, update_fn)


def scale_expert_learning_rates(scales) -> optax.GradientTransformation:
    """Multiplies the update of expert k's branch parameters by scales[k].

    Branch parameters live under 'experts' with a leading expert axis E (`ltx.models`), so the
    multiplier broadcasts over that axis. Shared parameters keep their learning rate.
    """
    scales = tuple(float(x) for x in scales)

    def update_fn(updates, state, params=None):
        del params

        def scale(path, u):
            if not parameter_path(path).startswith("experts/"):
                return u
            if u.shape[0] != len(scales):
                raise ValueError(f"{len(scales)} expert learning-rate scales for a parameter "
                                 f"{parameter_path(path)} of shape {u.shape}; expected a leading "
                                 f"expert axis of {len(scales)}")
            factors = jnp.asarray(scales, u.dtype).reshape((-1,) + (1,) * (u.ndim - 1))
            return u * factors

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def trainable_mask(params, pattern: str):
    """A pytree of bools like `params`: True where `re.search(pattern, path)`."""
    mask = jax.tree_util.tree_map_with_path(
        lambda path, _: bool(re.search(pattern, parameter_path(path))), params)
    if not any(jax.tree.leaves(mask)):
        names = [parameter_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        raise ValueError(f"trainable pattern {pattern!r} matches no parameter; parameters look "
                         f"like {names[:3]} ... {names[-2:]}")
    return mask


def make_optimizer(optimizer_config, learning_rate: optax.Schedule, *,
                   trainable: str | None = None, expert_lr_scales=None,
                   constraint: optax.GradientTransformation | None = None
                   ) -> optax.GradientTransformation:
    """PyTorch-equivalent SGD (coupled weight decay, optional Nesterov) from `config.optimizer`.

    `optimizer.lr_multipliers`, a tuple of (regex, multiplier) pairs, gives parameter groups
    their own learning rate (e.g. SADE's Places-LT recipe: classifier x10 over the backbone).
    The method's rules come on top: `expert_lr_scales` [E] scales each expert branch's learning
    rate (ACE), and `trainable` (a regex over parameter paths, or `optimizer.trainable`) freezes
    every other parameter: no update, no weight decay, no momentum (RIDE's router stage; the
    class-balanced experts' frozen lower blocks). `constraint` (the method's
    `update_constraint`) comes last, so it sees the update SGD would make and may change it,
    e.g. to project the new parameters back into a norm ball (weight balancing's MaxNorm).
    """
    cfg = optimizer_config
    if cfg.name != "sgd":
        raise ValueError(f"optimizer.name={cfg.name!r}; expected 'sgd'")
    if cfg.weight_decay < 0 or not 0 <= cfg.momentum < 1:
        raise ValueError(f"optimizer weight_decay={cfg.weight_decay}, momentum={cfg.momentum}; "
                         "expected weight_decay >= 0 and 0 <= momentum < 1")
    parts = [
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
    ]
    rules = tuple(cfg.get("lr_multipliers", ()))
    for rule in rules:
        if len(rule) != 2 or float(rule[1]) < 0:
            raise ValueError(f"optimizer.lr_multipliers entry {rule!r}; expected "
                             "(regex, multiplier >= 0)")
    if rules:
        parts.append(scale_by_lr_multipliers(rules))
    if expert_lr_scales is not None:
        if any(float(x) < 0 for x in expert_lr_scales):
            raise ValueError(f"expert learning-rate scales {tuple(expert_lr_scales)}; expected "
                             ">= 0")
        parts.append(scale_expert_learning_rates(expert_lr_scales))
    if constraint is not None:
        parts.append(constraint)
    tx = optax.chain(*parts)
    configured = cfg.get("trainable", "")
    if trainable and configured:
        raise ValueError(f"optimizer.trainable={configured!r} but the method already freezes all "
                         f"but {trainable!r}; set only one")
    pattern = trainable or configured
    if not pattern:
        return tx
    # Frozen parameters get neither updates nor optimizer state.
    return optax.multi_transform(
        {"train": tx, "freeze": optax.set_to_zero()},
        lambda params: jax.tree.map(lambda t: "train" if t else "freeze",
                                    trainable_mask(params, pattern)))
