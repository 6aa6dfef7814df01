"""ALA + instance-aware MoE (Zhao et al., "Improving long-tailed classification from instance
level", arXiv 2104.06094; AAAI 2022 as "Adaptive logit adjustment loss for long-tailed visual
recognition").

There is no official code (docs/methods/ala_moe.md); this is written from the paper's description
and the third-party `ALALoss`. The home: `loss` (ALA), `router` (the instance-aware router and the
routed model), `config` (config helpers); this module builds the method.


- model: RIDE's layout (shared stem + stage 1 on CIFAR, through layer2 on ImageNet; 3 experts
  at reduced width, cosine heads x 30) plus the instance-aware router
  (`router.InstanceRouter`: global average pooling of the shared trunk's feature map
  and one linear layer; softmax over experts). The MoE prediction is the router-weighted sum of
  the expert logits (`ltx.fusion.router_weighted`).
- stage 'moe': `loss.ala_loss` (difficulty x quantity margin on the target logit) on every
  expert (averaged over experts) and, from `router_epoch` on (by default the last learning-rate
  decay), also on the MoE output, which is the only loss that reaches the router, so the router
  is trained end to end with the experts from then on. Optional DRW class weights from
  `drw_epoch` (off by default: no reference says whether the MoE used them).
- stage 'distill': one full-width expert (the single-model architecture) trained with ALA plus
  T^2 KL(MoE || student) at T = 2 (`ltx.losses.distillation_loss`) against the frozen MoE of the
  previous stage (`teacher_from`). Its cost is one backbone.

Choices the paper does not pin down (ours): the averaging over experts, the equal weight of the
MoE and expert terms, and the equal weight of ALA and the distillation term.
"""

from __future__ import annotations

import jax
import numpy as np

from ltx import fusion, losses
from ltx.methods import base
from ltx.methods.ala_moe.loss import ala_loss, ala_quantity_factors  # noqa: F401
from ltx.methods.ala_moe.router import InstanceRoutedModel

STAGES = ("moe", "distill")


def moe_logits(outputs) -> jax.Array:
    """[B, C]: the expert logits [E, B, C] weighted by softmax of the router [B, E]."""
    return fusion.router_weighted(outputs.logits, jax.nn.softmax(outputs.router, axis=-1))


def _aggregate(outputs, params=None):
    del params
    return moe_logits(outputs)


def build(method_config, class_counts) -> dict:
    """Fields: stage ('moe' | 'distill'), num_experts, scale (30), router_epoch, drw_epoch,
    beta, distill_temperature (2)."""
    cfg = method_config
    counts = np.asarray(class_counts)
    stage = cfg.stage
    if stage not in STAGES:
        raise ValueError(f"method.stage={stage!r}; expected one of {STAGES}")
    weights = losses.drw_schedule(counts, cfg.drw_epoch, cfg.beta)

    def ala(logits, labels, epoch, where):
        return ala_loss(logits, labels, class_counts=counts, scale=cfg.scale,
                        class_weights=weights(epoch), where=where)

    balanced = base.balanced_prior_correction
    if stage == "distill":
        if int(cfg.num_experts) != 1:
            raise ValueError(f"method.num_experts={cfg.num_experts} in the distill stage; the "
                             "MoE is distilled into one expert")

        def distill_loss(outputs, labels, epoch):
            student = outputs.logits[0]
            return ala(student, labels, epoch, outputs.mask) + losses.distillation_loss(
                student, outputs.teacher_logits, temperature=cfg.distill_temperature,
                where=outputs.mask)

        return dict(num_experts=1, loss=distill_loss, needs_teacher=True,
                    correct_prior=balanced)

    num_experts = int(cfg.num_experts)
    if num_experts < 2:
        raise ValueError(f"method.num_experts={num_experts}; the MoE needs at least 2 experts")
    if cfg.router_epoch < 0:
        raise ValueError(f"method.router_epoch={cfg.router_epoch}; expected >= 0")

    def moe_loss(outputs, labels, epoch):
        experts = ala(outputs.logits, labels, epoch, outputs.mask)  # Mean over experts.
        router_on = (epoch >= cfg.router_epoch).astype(experts.dtype)
        return experts + router_on * ala(moe_logits(outputs), labels, epoch, outputs.mask)

    return dict(num_experts=num_experts, loss=moe_loss, aggregate=_aggregate,
                wrap_model=InstanceRoutedModel, model_additions=dict(router="instance"),
                correct_prior=balanced)
