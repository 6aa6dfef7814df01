"""Config helpers of ALA + MoE (used by configs/*_ala_moe.py): the method fields and stages."""

from __future__ import annotations

import ml_collections


def method_config(*, num_experts: int = 3, router_epoch: int, drw_epoch: int
                  ) -> ml_collections.ConfigDict:
    """`config.method` of ALA + MoE (`ltx.methods.ala_moe`), stage 'moe'."""
    return ml_collections.ConfigDict(dict(
        name="ala_moe", stage="moe", num_experts=num_experts, scale=30.0,
        router_epoch=router_epoch, drw_epoch=drw_epoch, beta=0.9999, distill_temperature=2.0))


def set_stages(c: ml_collections.ConfigDict, *, full_widths) -> ml_collections.ConfigDict:
    """The MoE, then its distillation into one full-width expert trained from scratch with the
    same schedule (`teacher_from` the MoE)."""
    c.stage_order = ("moe", "distill")
    c.stages.moe = ml_collections.ConfigDict()
    c.stages.distill = ml_collections.ConfigDict({
        "teacher_from": "moe", "method": {"stage": "distill", "num_experts": 1},
        "model": {"widths": tuple(full_widths)}})
    return c
