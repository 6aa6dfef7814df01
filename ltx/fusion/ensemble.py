"""Fusion of full-width experts: every expert has logits over all C classes, [E, B, C].

- `logit_mean`: the mean of the experts' logits (a product of experts; BalPoE, RIDE, SADE).
- `prob_mean`: log of the mean of the experts' softmax probabilities (soft voting).
- `router_weighted`: per-sample router weights over experts (ALA's instance-aware router).

All are pure functions of arrays, valid under `jax.jit` (class masks are static NumPy), and
compute in float32 at least (float64 stays float64 with x64 enabled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.losses import input_checks as checks

def check_expert_logits(expert_logits, fn: str) -> jax.Array:
    """expert_logits [E, B, C] with E >= 1, in the compute dtype."""
    z = checks.check_logits(expert_logits, fn, (3,), "[E, B, C]", "expert_logits")
    if z.shape[0] < 1:
        raise ValueError(f"{fn}: expert_logits has no experts, got shape {tuple(z.shape)}; "
                         "expected E >= 1")
    return z.astype(checks.compute_dtype(z))

def check_target_masks(target_masks, fn: str, num_experts: int, num_classes: int) -> np.ndarray:
    """bool [E, C] target masks, checked (a ValueError names `fn`)."""
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
    return jnp.mean(check_expert_logits(expert_logits, "logit_mean"), axis=0)

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
    z = check_expert_logits(expert_logits, "prob_mean")
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
    z = check_expert_logits(expert_logits, fn)
    num_experts, batch, _ = z.shape
    weights = checks.check_logits(router_weights, fn, (2,), "[B, E]", "router_weights")
    if weights.shape != (batch, num_experts):
        raise ValueError(f"{fn}: router_weights has shape {tuple(weights.shape)}; expected [B, E] "
                         f"= {(batch, num_experts)} (batch and experts of expert_logits)")
    dtype = checks.compute_dtype(z, weights)
    # Elementwise product and a sum over experts (exact, no reduced-precision matmul).
    return jnp.sum(weights.T.astype(dtype)[:, :, None] * z.astype(dtype), axis=0)
