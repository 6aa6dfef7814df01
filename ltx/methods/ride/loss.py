"""RIDE's losses: the distribution-aware diversity loss and expert routing (the
self-distillation term is `ltx.losses.distillation_loss`).

Follows `frank-xwang/RIDE-LongTailRecognition`: `model/loss.py` (`RIDELoss`,
`RIDELossWithDistill`) and, for routing, `model/ldam_drw_resnets/ea_resnet_cifar.py` and
`model/fb_resnets/EAResNet.py`. Expert logits are `[E, B, C]` and already include the cosine
scale s (RIDE multiplies by s inside the model); the model output is their mean over experts.

`ride_loss`, code vs paper:
- The T_bar^2 factor is not in the paper (RIDE issue #5: absorbed into lambda).
- The diversity term compares each expert with the ensemble mean, not the experts pairwise (a
  comment in the code calls the mean the linear-time stand-in).
- Quirk reproduced literally: when lambda == 0 the official loss computes l_k on z_bar instead
  of z_k ("collaborative" loss, RIDE issue #7), so L = E * LDAM_w(z_bar, y); an ablation with
  lambda = 0 therefore changes two things at once. With one expert z_bar = z_1 and L is exactly
  `ldam_loss` whatever lambda is.
- The class-balanced weights use beta = 0.9999 fixed in the code; here `beta` is a keyword.
- Evaluation in the official code calls the criterion without expert logits, which is plain CE
  on z_bar; use `cross_entropy` for that.
- Self-distillation (`RIDELossWithDistill`) is composed from this and `distillation_loss`; see
  there for the official multiplicity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.losses import input_checks as checks
from ltx.losses.distillation import kl_to_target
from ltx.losses.margin import (effective_number_weights, margins_from_counts, per_example_nll,
                               subtract_target_margin)

def _ride_temperatures(counts, xp, base_temperature, reweight_factor, fn):
    prior = counts / xp.sum(counts)
    num_classes = counts.shape[0]
    relative = num_classes * prior * reweight_factor + 1.0 - reweight_factor
    relative = relative / xp.max(relative)
    if xp is np and not np.all(relative > 0):
        raise ValueError(f"{fn}: reweight_factor = {reweight_factor} is too large: the relative "
                         f"temperatures (C p_c a + 1 - a) / max must all be > 0, got minimum "
                         f"{relative.min():.4g}")
    return base_temperature * relative

def ride_temperatures(class_counts, *, base_temperature: float = 1.0,
                      reweight_factor: float = 0.05) -> jax.Array:
    """RIDE's per-class diversity temperatures, used once re-weighting starts.

      t_c = (C p_c a + 1 - a) / max_c' (C p_c' a + 1 - a),  p_c = n_c / N,  a = reweight_factor
      T_c = base_temperature * t_c

    Head classes get the higher temperature (t = 1 for the most frequent class). CIFAR-100-LT with
    imbalance ratio 100 and a = 0.05 gives t from 1.0 (head) to 0.807 (tail), mean 0.847.
    `model/loss.py: RIDELoss.__init__` (`per_cls_weights_enabled_diversity`), which asserts that
    every t_c is positive; here that is a ValueError.

    Args:
      class_counts: [C] non-negative training counts per class (positive sum).
      base_temperature: T0 > 0.
      reweight_factor: a; CIFAR uses 0.05, ImageNet-LT 0.02, iNaturalist 0.015.

    Returns:
      float [C], in JAX's default float dtype (computed in float64 for concrete counts).
    """
    fn = "ride_temperatures"
    counts = checks.check_counts(class_counts, fn, positive=False)
    xp = checks.array_module(counts)
    checks.check_positive(base_temperature, "base_temperature", fn)
    return jnp.asarray(_ride_temperatures(counts, xp, base_temperature, reweight_factor, fn))

def _where(cond, a, b):
    """`a if cond else b` for a concrete Python/NumPy bool, else `jnp.where`."""
    if isinstance(cond, (bool, np.bool_)):
        return a if cond else b
    return jnp.where(cond, a, b)

def ride_loss(expert_logits: jax.Array, labels: jax.Array, *, class_counts, reweighting: bool,
              max_margin: float = 0.5, scale: float = 30.0, base_temperature: float = 1.0,
              diversity_factor: float = -0.2, reweight_factor: float = 0.05,
              beta: float = 0.9999, where=None) -> jax.Array:
    """RIDE's training loss (`model/loss.py: RIDELoss.forward` with `extra_info`).

    With z_k the logits of expert k (scaled, [B, C]), z_bar = mean_k z_k (the model output),
    margins m = `ldam_margins(class_counts, max_margin)`, lambda = diversity_factor:

      l_k = LDAM_w(z_k, y) = CE_w(z_k - s m_y e_y, y)     (`ldam_loss`, PyTorch weighted mean)
      D_k = T_bar^2 * (1/B) sum_i KL( softmax(sg(z_bar_i) / T) || softmax(z_k,i / T) )
      L   = sum_{k=1..E} [ l_k + lambda * D_k ]

    where sg is stop-gradient (the official target is computed under `torch.no_grad`) and

    - before re-weighting (`reweighting=False`): w = 1 (plain mean), T = T0 a scalar, T_bar = T0;
    - after (`reweighting=True`, RIDE's `epoch > reweight_epoch`): w = `drw_class_weights(
      class_counts, beta)`, T = `ride_temperatures(class_counts, T0, reweight_factor)` per class
      (dividing the logits column-wise), and T_bar = mean_c T_c, a constant.

    lambda < 0 pushes the experts away from the ensemble mean (CIFAR configs use -0.45, the code
    default is -0.2).

    The official code differs from the paper here (the module docstring lists how).

    Args:
      expert_logits: float [E, B, C], each expert's scaled cosine logits.
      labels: int [B] in [0, C).
      class_counts: [C] positive training counts per class.
      reweighting: whether DRW has started. A Python bool selects statically; a boolean scalar
        array (e.g. `epoch > reweight_epoch` inside a jitted step) switches without recompiling.
      max_margin, scale: LDAM margin of the rarest class and the cosine scale s (> 0).
      base_temperature: T0 > 0.
      diversity_factor: lambda (RIDE's `additional_diversity_factor`).
      reweight_factor: a in `ride_temperatures`.
      beta: class-balanced beta for the DRW weights, in [0, 1).
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar loss (summed over experts), float32 or wider.
    """
    fn = "ride_loss"
    expert_logits, labels, counts, reweighting, where = _checked_inputs(
        expert_logits, labels, class_counts, reweighting, where, fn)
    num_classes = expert_logits.shape[-1]
    xp = checks.array_module(counts)
    checks.check_positive(max_margin, "max_margin", fn, allow_zero=True)
    checks.check_positive(scale, "scale", fn)
    checks.check_positive(base_temperature, "base_temperature", fn)
    checks.check_fraction(beta, "beta", fn)

    dtype = checks.compute_dtype(expert_logits)
    logits = expert_logits.astype(dtype)
    margins = jnp.asarray(margins_from_counts(counts, xp, max_margin), dtype)
    temperatures = _ride_temperatures(counts, xp, base_temperature, reweight_factor, fn)
    mean_temperature = xp.mean(temperatures)
    class_weights = jnp.asarray(effective_number_weights(counts, xp, beta), dtype)
    temperatures = jnp.asarray(temperatures, dtype)

    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    drw_weights = onehot @ class_weights  # [B]
    target_weights, temperature, temperature_mean = _drw_terms(
        reweighting, drw_weights, temperatures, jnp.asarray(mean_temperature, dtype),
        base_temperature)

    mean_logits = jnp.mean(logits, axis=0)  # [B, C], the model output z_bar.
    base_logits = _where(diversity_factor == 0, jnp.broadcast_to(mean_logits, logits.shape), logits)
    base_losses = checks.weighted_mean(
        per_example_nll(subtract_target_margin(base_logits, onehot, margins, scale), onehot),
        target_weights, where)  # [E]

    log_target = jax.nn.log_softmax(jax.lax.stop_gradient(mean_logits) / temperature, axis=-1)
    log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)  # [E, B, C]
    diversity = temperature_mean ** 2 * kl_to_target(log_target, log_probs, where)  # [E]
    return jnp.sum(base_losses + diversity_factor * diversity)


def _checked_inputs(expert_logits, labels, class_counts, reweighting, where, fn: str):
    """`ride_loss`'s arrays checked: (expert_logits [E, B, C], labels [B], counts [C],
    reweighting a bool or a boolean scalar array, where [B] or None)."""
    expert_logits, labels = _checked_experts(expert_logits, labels, fn, 1,
                                             "expert_logits needs at least one expert")
    batch, num_classes = expert_logits.shape[1:]
    counts = checks.check_counts(class_counts, fn, num_classes, positive=True)
    where = checks.check_where(where, fn, batch)
    if not isinstance(reweighting, (bool, np.bool_)):
        reweighting = jnp.asarray(reweighting)
        if reweighting.shape != () or reweighting.dtype != jnp.bool_:
            raise ValueError(f"{fn}: reweighting must be a bool or a boolean scalar array, got "
                             f"dtype {reweighting.dtype} and shape {tuple(reweighting.shape)}")
    return expert_logits, labels, counts, reweighting, where


def _checked_experts(expert_logits, labels, fn: str, minimum: int, need: str):
    """(expert_logits [E, B, C], labels [B]) checked, with at least `minimum` experts (`need`
    says why)."""
    expert_logits = checks.check_logits(expert_logits, fn, (3,), "[E, B, C]", "expert_logits")
    num_experts, batch, num_classes = expert_logits.shape
    if num_experts < minimum:
        raise ValueError(f"{fn}: {need}, got shape {tuple(expert_logits.shape)}")
    return expert_logits, checks.check_labels(labels, fn, batch, num_classes)


def _drw_terms(reweighting, drw_weights, temperatures, mean_temperature, base_temperature):
    """(per-row weights [B] or None, temperature [C] or scalar, T_bar) before or after the
    re-weighting starts: a Python bool selects, a traced one switches in the same program
    (all-ones weights give the plain mean)."""
    if isinstance(reweighting, (bool, np.bool_)):
        if reweighting:
            return drw_weights, temperatures, mean_temperature
        return None, base_temperature, base_temperature
    return (jnp.where(reweighting, drw_weights, 1.0),
            jnp.where(reweighting, temperatures, base_temperature),
            jnp.where(reweighting, mean_temperature, base_temperature))


def routing_targets(expert_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Training targets of RIDE's expert-assignment routers (stage 2).

    With a_i = [argmax_c sum_{j<=i} z_j == y] the correctness of the ensemble of the first i+1
    experts, router i (deciding whether to run expert i+1) has target

      target_i = (not a_i) and (a_j for some j > i),   i = 0 .. E-2,

    i.e. "the current ensemble is wrong and a larger one gets it right"
    (`ea_resnet_cifar.py` / `EAResNet.py: forward`, training branch). No gradient flows.

    Args:
      expert_logits: float [E, B, C], E >= 2.
      labels: int [B] in [0, C).

    Returns:
      bool [E-1, B].
    """
    fn = "routing_targets"
    expert_logits, labels = _checked_experts(expert_logits, labels, fn, 2,
                                             "routing needs at least 2 experts")
    running = jnp.cumsum(jax.lax.stop_gradient(expert_logits), axis=0)  # [E, B, C]
    correct = jnp.argmax(running, axis=-1) == labels  # [E, B]
    # later[i] = any_{j > i} correct[j].
    later = jnp.flip(jnp.cumsum(jnp.flip(correct[1:], 0).astype(jnp.int32), axis=0), 0) > 0
    return jnp.logical_and(jnp.logical_not(correct[:-1]), later)


def routing_loss(router_logits: jax.Array, targets: jax.Array, *, pos_weight: float,
                 where=None) -> jax.Array:
    """RIDE's router loss: binary cross-entropy with logits and a positive-class weight P.

      l = -[ P * t * log sigmoid(r) + (1 - t) * log(1 - sigmoid(r)) ]
        = (1 - t) * r + (1 + (P - 1) * t) * softplus(-r)
      L = mean over every router and sample

    The official model sums `F.binary_cross_entropy_with_logits(r_i, t_i, pos_weight=P)` (each a
    batch mean) over the E-1 routers and divides by E-1, which is the mean over all elements since
    every router sees the same batch. P = 100 in the released configs (20 as the code default).

    Args:
      router_logits: float [E-1, B] (any shape; targets must match it).
      targets: bool or float in [0, 1], same shape (e.g. `routing_targets`).
      pos_weight: P >= 0.
      where: optional bool [B] over the last axis; only these samples count (a padded batch).

    Returns:
      Scalar loss, float32 or wider.
    """
    fn = "routing_loss"
    router_logits, targets = jnp.asarray(router_logits), jnp.asarray(targets)
    if router_logits.shape != targets.shape:
        raise ValueError(f"{fn}: targets must have the shape of router_logits "
                         f"{tuple(router_logits.shape)}, got {tuple(targets.shape)}")
    if router_logits.size == 0:
        raise ValueError(f"{fn}: router_logits is empty (shape {tuple(router_logits.shape)})")
    checks.check_positive(pos_weight, "pos_weight", fn, allow_zero=True)
    dtype = checks.compute_dtype(router_logits)
    r = router_logits.astype(dtype)
    t = targets.astype(dtype)
    losses = (1.0 - t) * r + (1.0 + (pos_weight - 1.0) * t) * jax.nn.softplus(-r)
    where = checks.check_where(where, fn, router_logits.shape[-1])
    return jnp.mean(checks.batch_mean(losses, where))
