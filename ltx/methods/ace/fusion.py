"""ACE's aggregation: the group average of the experts on nested class splits, with the
weight-norm rescaling of the experts' classifiers (ACE's `valid_model`).

Pure functions of arrays, valid under `jax.jit` (class masks are static NumPy), computing in
float32 at least.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltx.fusion.ensemble import check_expert_logits, check_target_masks
from ltx.losses import input_checks as checks


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
    z = check_expert_logits(expert_logits, fn)
    num_experts, _, num_classes = z.shape
    masks = check_target_masks(target_masks, fn, num_experts, num_classes)
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
    masks = check_target_masks(target_masks, fn, num_experts, num_classes)
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
