"""Fusion of full-width experts: every expert has logits over all C classes, [E, B, C].

- `logit_mean`: the mean of the experts' logits (a product of experts; BalPoE, RIDE, SADE).
- `prob_mean`: log of the mean of the experts' softmax probabilities (soft voting).
- `router_weighted`: per-sample router weights over experts (ALA's instance-aware router).
- `group_average`, `ace_rescale_factors`: ACE's group average and its weight-norm rescaling.
- `ride_cascade`: RIDE's dynamic expert assignment at inference.

All are pure functions of arrays, valid under `jax.jit` (class masks are static NumPy), and
compute in float32 at least (float64 stays float64 with x64 enabled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.losses import _input_checks as checks


def _expert_logits(expert_logits, fn: str) -> jax.Array:
    """expert_logits [E, B, C] with E >= 1, in the compute dtype."""
    z = checks.check_logits(expert_logits, fn, (3,), "[E, B, C]", "expert_logits")
    if z.shape[0] < 1:
        raise ValueError(f"{fn}: expert_logits has no experts, got shape {tuple(z.shape)}; "
                         "expected E >= 1")
    return z.astype(checks.compute_dtype(z))


def _target_masks(target_masks, fn: str, num_experts: int, num_classes: int) -> np.ndarray:
    return checks.check_class_mask(target_masks, fn, "target_masks", (num_experts, num_classes),
                                   "[E, C] (experts, classes)")


def logit_mean(expert_logits: jax.Array) -> jax.Array:
    """The mean of the experts' logits, [B, C].

      out[b, c] = (1 / E) sum_k z_k[b, c]

    The ensemble output of BalPoE, RIDE and SADE: a softmax of the mean logit is the normalized
    geometric mean of the experts' distributions (a product of experts).

    Args:
      expert_logits: float [E, B, C].

    Returns:
      float [B, C] (float32 or wider).
    """
    return jnp.mean(_expert_logits(expert_logits, "logit_mean"), axis=0)


def prob_mean(expert_logits: jax.Array) -> jax.Array:
    """Log of the mean of the experts' softmax probabilities, [B, C] (soft voting).

      out[b, c] = log( (1 / E) sum_k softmax(z_k[b])_c )
                = logsumexp_k log_softmax(z_k[b])_c - log E

    computed in the log domain, so that no probability underflows. The rows are normalized
    log-probabilities.

    Args:
      expert_logits: float [E, B, C].

    Returns:
      float [B, C] log-probabilities (float32 or wider).
    """
    z = _expert_logits(expert_logits, "prob_mean")
    log_probs = jax.nn.log_softmax(z, axis=-1)
    return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(jnp.asarray(z.shape[0], z.dtype))


def router_weighted(expert_logits: jax.Array, router_weights: jax.Array) -> jax.Array:
    """Per-sample weighted sum of the experts' logits, [B, C] (ALA's instance-aware router).

      out[b, c] = sum_k w[b, k] z_k[b, c]

    Args:
      expert_logits: float [E, B, C].
      router_weights: float [B, E], the router's weights per sample (ALA's router ends with a
        softmax, so each row sums to 1; that is not checked, any weights are combined as given).

    Returns:
      float [B, C] (float32 or wider).
    """
    fn = "router_weighted"
    z = _expert_logits(expert_logits, fn)
    num_experts, batch, _ = z.shape
    weights = checks.check_logits(router_weights, fn, (2,), "[B, E]", "router_weights")
    if weights.shape != (batch, num_experts):
        raise ValueError(f"{fn}: router_weights has shape {tuple(weights.shape)}; expected [B, E] "
                         f"= {(batch, num_experts)} (batch and experts of expert_logits)")
    dtype = checks.compute_dtype(z, weights)
    # Elementwise product and a sum over experts (exact, no reduced-precision matmul).
    return jnp.sum(weights.T.astype(dtype)[:, :, None] * z.astype(dtype), axis=0)


def group_average(expert_logits: jax.Array, target_masks, scales=None) -> jax.Array:
    """ACE's group average: per class, the mean of the scaled logits of the experts targeting it.

      out[b, c] = sum_{k : c in TC_k} s_k z_k[b, c]  /  |{k : c in TC_k}|

    With ACE's nested masks (expert 0 all classes, expert 1 medium + few, expert 2 few; `ace_split`)
    and scales (1, m, f) this is z_0 on the many-shot classes, (z_0 + m z_1) / 2 on the medium
    classes and (z_0 + m z_1 + f z_2) / 3 on the few-shot classes (ACE's `valid_model`).

    Args:
      expert_logits: float [E, B, C].
      target_masks: static bool [E, C], TC_k; every class needs at least one expert.
      scales: float [E] (e.g. `ace_rescale_factors`), default all ones.

    Returns:
      float [B, C] (float32 or wider).
    """
    fn = "group_average"
    z = _expert_logits(expert_logits, fn)
    num_experts, _, num_classes = z.shape
    masks = _target_masks(target_masks, fn, num_experts, num_classes)
    uncovered = np.flatnonzero(~masks.any(axis=0))
    if uncovered.size:
        raise ValueError(f"{fn}: classes {uncovered[:8].tolist()}"
                         f"{' ...' if uncovered.size > 8 else ''} are targeted by no expert; "
                         "every class needs at least one expert in target_masks")
    if scales is None:
        scaled = z
    else:
        scales = checks.as_array(scales)
        if tuple(scales.shape) != (num_experts,):
            raise ValueError(f"{fn}: scales has shape {tuple(scales.shape)}; expected [E] = "
                             f"({num_experts},)")
        dtype = checks.compute_dtype(z, scales)
        z = z.astype(dtype)
        scaled = jnp.asarray(scales, dtype)[:, None, None] * z
    counts = masks.sum(axis=0).astype(np.float64)  # [C], static, >= 1.
    total = jnp.sum(jnp.where(masks[:, None, :], scaled, 0.0), axis=0)
    return total / jnp.asarray(counts, total.dtype)


def ace_rescale_factors(head_kernels: jax.Array, target_masks) -> jax.Array:
    """ACE's weight-norm rescaling factors of the experts, [E] (`valid_model`: m and f).

      factor_k = mean_{c} ||W_0[:, c]||  /  mean_{c in TC_k} ||W_k[:, c]||

    with ||W_k[:, c]|| the L2 norm of expert k's classifier column for class c. Expert 0 targets
    every class, so factor_0 = 1; the tail experts are trained on fewer classes and get larger
    weights, which the factor scales back to expert 0's level before `group_average`.

    Args:
      head_kernels: float [E, F, C], each expert's classifier kernel (features F -> classes C).
      target_masks: static bool [E, C], TC_k; row 0 must be all True, every row needs a class.

    Returns:
      float [E] (float32 or wider).
    """
    fn = "ace_rescale_factors"
    kernels = checks.check_logits(head_kernels, fn, (3,), "[E, F, C]", "head_kernels")
    num_experts, _, num_classes = kernels.shape
    if num_experts < 1:
        raise ValueError(f"{fn}: head_kernels has no experts, got shape {tuple(kernels.shape)}")
    masks = _target_masks(target_masks, fn, num_experts, num_classes)
    if not masks[0].all():
        missing = np.flatnonzero(~masks[0])
        raise ValueError(f"{fn}: target_masks[0] misses classes {missing[:8].tolist()}"
                         f"{' ...' if missing.size > 8 else ''}; expected expert 0 to target "
                         "every class (ACE's reference expert)")
    empty = np.flatnonzero(~masks.any(axis=1))
    if empty.size:
        raise ValueError(f"{fn}: target_masks[{int(empty[0])}] selects no class; every expert "
                         "needs at least one target class")
    w = kernels.astype(checks.compute_dtype(kernels))
    norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=1))  # [E, C]
    reference = jnp.mean(norms[0])
    own = jnp.sum(jnp.where(masks, norms, 0.0), axis=1) / jnp.asarray(masks.sum(axis=1), w.dtype)
    return reference / own


def ride_cascade(expert_logits: jax.Array, router_logits: jax.Array,
                 threshold: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """RIDE's dynamic expert assignment at inference: the mean logit of the experts a sample uses.

    Expert 0 always runs. A sample that reached expert i continues to expert i + 1 when
    sigmoid(router_logits[i, b]) > threshold; once a router stops it, no later expert runs:

      used[0, b] = 1,   used[i + 1, b] = used[i, b] and sigmoid(r[i, b]) > threshold
      out[b] = sum_k used[k, b] z_k[b] / sum_k used[k, b]

    The comparison is done as r > log(t / (1 - t)), which is the same in exact arithmetic and
    keeps the limits exact: threshold 0 uses every expert (then out = `logit_mean`) and
    threshold 1 only expert 0.

    Args:
      expert_logits: float [E, B, C].
      router_logits: float [E - 1, B], router i's logit for running expert i + 1 ([0, B] when
        E = 1).
      threshold: in [0, 1].

    Returns:
      (logits float [B, C] (float32 or wider), num_used int32 [B] in [1, E]).
    """
    fn = "ride_cascade"
    z = _expert_logits(expert_logits, fn)
    num_experts, batch, _ = z.shape
    r = checks.as_array(router_logits)
    if tuple(r.shape) != (num_experts - 1, batch):
        raise ValueError(f"{fn}: router_logits has shape {tuple(r.shape)}; expected [E - 1, B] = "
                         f"{(num_experts - 1, batch)} (one router per expert after the first)")
    if not jnp.issubdtype(r.dtype, jnp.floating):
        raise ValueError(f"{fn}: router_logits must be floating point, got dtype {r.dtype}")
    if checks.has_values(threshold):
        t = np.asarray(threshold, np.float64)
        if t.shape != () or not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"{fn}: threshold must be a number in [0, 1], got {threshold}")
    dtype = checks.compute_dtype(z, r)
    z = z.astype(dtype)
    t = jnp.asarray(threshold, dtype)
    cut = jnp.log(t) - jnp.log1p(-t)  # logit(t): -inf at 0, +inf at 1.
    go_on = jnp.asarray(r, dtype) > cut  # [E - 1, B]
    used = jnp.concatenate([jnp.ones((1, batch), bool),
                            jnp.cumprod(go_on.astype(jnp.int32), axis=0) > 0], axis=0)  # [E, B]
    num_used = jnp.sum(used, axis=0, dtype=jnp.int32)
    total = jnp.sum(jnp.where(used[:, :, None], z, 0.0), axis=0)
    return total / num_used[:, None].astype(dtype), num_used
