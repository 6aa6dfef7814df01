"""Fusion of full-width experts shared by several methods: pure functions of logits [E, B, C].

`logit_mean` (product of experts; BalPoE, RIDE, SADE, CE...), `prob_mean` (soft voting) and
`router_weighted` (per-sample router weights; ALA's instance-aware MoE). Method-specific fusions
live in the method's home: ACE's group average (`ltx.methods.ace.fusion`), RIDE's cascade
(`ltx.methods.ride.cascade`), the class-balanced experts' fusions (`ltx.methods.cbe.fusion`).
"""

from ltx.fusion.ensemble import logit_mean, prob_mean, router_weighted

__all__ = ["logit_mean", "prob_mean", "router_weighted"]
