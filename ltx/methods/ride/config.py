"""Config helpers of RIDE (used by configs/*_ride.py): the method fields and the stages."""

from __future__ import annotations

import ml_collections


def method_config(*, num_experts: int = 3, diversity_factor: float = -0.45, reweight_epoch: int,
                  reweight_factor: float = 0.05, router_top_k: int = 30
                  ) -> ml_collections.ConfigDict:
    """`config.method` of RIDE (`ltx.methods.ride`), stage 1, the CIFAR defaults."""
    return ml_collections.ConfigDict(dict(
        name="ride", stage="experts", num_experts=num_experts, max_margin=0.5, scale=30.0,
        base_temperature=1.0, diversity_factor=diversity_factor, reweight_factor=reweight_factor,
        reweight_epoch=reweight_epoch, beta=0.9999, distill=False, distill_temperature=1.5,
        distill_multiplicity="official", router_hidden=16, router_top_k=router_top_k,
        router_pos_weight=100.0, router_threshold=0.5))


def set_stages(c: ml_collections.ConfigDict, *, distill: int, router_batch_size: int,
               distill_warmup_epochs: int, router_epochs: int = 5
               ) -> ml_collections.ConfigDict:
    """RIDE's stages: [a distilled student,] then the router.

    `distill`: 0 none; 1 a 6-expert teacher stage, then the student distilled from it; 2 the
    student distilled from the finished run in `config.teacher.workdir` (e.g. a published
    teacher).

    The router stage (docs/methods/ride.md) starts from the experts' checkpoint, freezes them,
    samples classes uniformly and trains 5 epochs of cosine from lr 0.01 (Nesterov, wd 5e-4) without
    warmup.
    """
    if distill not in (0, 1, 2):
        raise ValueError(f"distill={distill!r}; expected 0 (none), 1 (teacher stage) or 2 "
                         "(teacher.workdir)")
    c.stage_order = ("experts", "router")
    c.stages.experts = ml_collections.ConfigDict()
    if distill == 2:
        c.stages.experts = ml_collections.ConfigDict({
            "method": {"distill": True},
            "schedule": {"warmup_epochs": distill_warmup_epochs}})
    if distill == 1:
        c.stage_order = ("teacher", "experts", "router")
        c.stages.teacher = ml_collections.ConfigDict({"method": {"num_experts": 6}})
        c.stages.experts = ml_collections.ConfigDict({
            "teacher_from": "teacher", "method": {"distill": True},
            "schedule": {"warmup_epochs": distill_warmup_epochs}})
    c.stages.router = ml_collections.ConfigDict({
        "init_from": "experts", "num_epochs": router_epochs, "batch_size": router_batch_size,
        "method": {"stage": "router"}, "data": {"sampler": "class_balanced"},
        "optimizer": {"lr": 0.01, "reference_batch_size": 0, "nesterov": True,
                      "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0, "decay_epochs": ()},
        "eval": {"every_epochs": 0}, "checkpoint": {"every_epochs": router_epochs}})
    return c
