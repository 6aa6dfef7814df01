"""Fusion: pure functions that combine the outputs of an ensemble of experts.

Where each fusion lives:

- `ensemble`: full-width experts, logits [E, B, C]: `logit_mean` (product of experts; BalPoE,
  RIDE, SADE), `prob_mean` (soft voting), `router_weighted` (ALA's instance-aware router),
  `group_average` and `ace_rescale_factors` (ACE), `ride_cascade` (RIDE's dynamic expert
  assignment).
- `class_balanced`: class-balanced experts (Sharma et al., GCPR 2020) with disjoint class subsets,
  a list of local logits [N, K_k + 1] (reject class last) or [N, K_k]: `expert_distributions`,
  `soft_voting`, `kl_fusion`, `expert_selection` / `selected_experts`, `oracle`, stacking
  (`fit_stacking`, `apply_stacking`) and the official joint calibration
  (`fit_joint_calibration`, `apply_joint_calibration`).

Class masks are static NumPy arrays; the functions of arrays are valid under `jax.jit` and compute
in float32 at least.
"""

from ltx.fusion.class_balanced import (LOG_ZERO, apply_joint_calibration, apply_stacking,
                                       expert_distributions, expert_selection,
                                       fit_joint_calibration, fit_stacking, kl_fusion, oracle,
                                       selected_experts, soft_voting)
from ltx.fusion.ensemble import (ace_rescale_factors, group_average, logit_mean, prob_mean,
                                 ride_cascade, router_weighted)

__all__ = [
    "LOG_ZERO",
    "ace_rescale_factors",
    "apply_joint_calibration",
    "apply_stacking",
    "expert_distributions",
    "expert_selection",
    "fit_joint_calibration",
    "fit_stacking",
    "group_average",
    "kl_fusion",
    "logit_mean",
    "oracle",
    "prob_mean",
    "ride_cascade",
    "router_weighted",
    "selected_experts",
    "soft_voting",
]
