"""RIDE's dynamic expert assignment at inference: the experts run as a cascade, each router
deciding whether an image goes on to the next expert.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.fusion.ensemble import check_expert_logits
from ltx.losses import input_checks as checks


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
    z = check_expert_logits(expert_logits, fn)
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
