"""RIDE: routing diverse distribution-aware experts (Wang et al., ICLR 2021).

Recipe (official code `frank-xwang/RIDE-LongTailRecognition`; docs/methods/ride.md). The home:
`loss` (RIDE loss, routing targets and loss), `router` (the cascade router and the frozen routed
model), `cascade` (inference), `config` (config helpers); this module builds the method.


- model: shared stem + stage 1 (CIFAR) or through layer2 (ImageNet); every expert its own later
  stages at reduced width (CIFAR 24/48 instead of 32/64, ImageNet planes 192/384), cosine heads
  x 30 inside the model. Prediction: the mean of the expert logits.
- stage 1 (`method.stage='experts'`): `loss.ride_loss`, per-expert LDAM plus
  lambda * T_bar^2 * KL(sg(z_bar)/T || z_k/T) summed over experts, with DRW weights and per-class
  temperatures from `reweight_epoch` on (official `epoch > reweight_epoch` with 1-indexed
  epochs, i.e. 0-indexed epoch >= reweight_epoch). CIFAR: lambda -0.45, reweight at 160, a 0.05.
- self-distillation (`distill=True`, needs a teacher: a 6-expert RIDE run, as `teacher_from` stage
  or `teacher.workdir`): adds T_d^2 KL(teacher mean || student mean) at T_d = 1.5. The official
  `RIDELossWithDistill` adds the whole RIDE loss and the KD term once per expert, so its loss is
  E * (RIDE + KD); that multiplicity is the default (`distill_multiplicity='official'`), 'clean'
  gives RIDE + KD. Distill configs also lengthen CIFAR's warmup from 5 to 20 epochs.
- stage 2 (`method.stage='router'`): the expert-assignment routers (`router.CascadeRouter`:
  top-k running-mean logits, a 16-unit hidden layer per router on L2-normalised
  pooled features, a shared output layer), everything else frozen with BatchNorm in inference
  mode; `routing_loss` (BCE, pos_weight 100) on `routing_targets`; class-balanced sampling; 5
  epochs of cosine from lr 0.01, batch 512. Inference runs the experts in cascade
  (`cascade.ride_cascade`, continue while sigmoid(r) > 0.5) and reports the average number of
  experts per image and the GFLOPs that implies, overall and per shot group.

Code vs paper: the T_bar^2 factor, lambda -0.45 on CIFAR, rotation augmentation and the distill
multiplicity are the code's; the official CIFAR runs select the best epoch on the test set,
ltx reports the last epoch.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from ltx import evaluators, losses, models
from ltx.data import shots
from ltx.methods import base
from ltx.methods.ride.cascade import ride_cascade
from ltx.methods.ride.loss import ride_loss, routing_loss, routing_targets
from ltx.methods.ride.router import CascadeRoutedModel
from ltx.models import flops

STAGES = ("experts", "router")
DISTILL_MULTIPLICITIES = ("official", "clean")


def _experts_stage(cfg, counts: np.ndarray) -> dict:
    num_experts = int(cfg.num_experts)
    distill = bool(cfg.distill)
    multiplicity = cfg.distill_multiplicity
    if multiplicity not in DISTILL_MULTIPLICITIES:
        raise ValueError(f"method.distill_multiplicity={multiplicity!r}; expected one of "
                         f"{DISTILL_MULTIPLICITIES}")

    def loss(outputs, labels, epoch):
        value = ride_loss(
            outputs.logits, labels, class_counts=counts,
            reweighting=epoch >= cfg.reweight_epoch, max_margin=cfg.max_margin,
            scale=cfg.scale, base_temperature=cfg.base_temperature,
            diversity_factor=cfg.diversity_factor, reweight_factor=cfg.reweight_factor,
            beta=cfg.beta, where=outputs.mask)
        if not distill:
            return value
        value = value + losses.distillation_loss(
            jnp.mean(outputs.logits, axis=0), outputs.teacher_logits,
            temperature=cfg.distill_temperature, where=outputs.mask)
        return num_experts * value if multiplicity == "official" else value

    return dict(num_experts=num_experts, loss=loss, needs_teacher=distill)


def cascade_aggregate(threshold: float):
    def aggregate(outputs, params=None):
        del params
        return ride_cascade(outputs.logits, outputs.router.T, threshold)[0]
    return aggregate


def expert_flops(model_config, num_classes: int, image_shape) -> tuple[float, float]:
    """(GFLOPs of the shared trunk, GFLOPs of one expert branch) per image
    (`ltx.models.flops`): the count is linear in the number of experts, so two counts give both
    parts. The routers' few dense layers are left out (under 0.01% of a ResNet-32)."""
    counts = [flops.model_stats(models.build(model_config, num_classes=num_classes,
                                             num_experts=num_experts), image_shape)["gflops"]
              for num_experts in (1, 2)]
    branch = counts[1] - counts[0]
    return counts[0] - branch, branch


def routing_numbers(outputs, labels, dataset, config) -> dict[str, float]:
    """The cascade's experts per image and the GFLOPs they imply, overall and per shot group,
    of one split: `outputs` (host `Outputs`: expert logits [E, N, C], router [N, E]), labels
    [N]. The 'routing' evaluator's numbers: training logs them with its periodic and final
    metrics, and `ltx-eval` reports them."""
    _, used = ride_cascade(jnp.asarray(outputs.logits), jnp.asarray(outputs.router.T),
                           float(config.method.router_threshold))
    used = np.asarray(used, np.float64)
    trunk, branch = expert_flops(config.model, dataset.num_classes, dataset.image_shape)
    groups = shots.shot_groups(dataset.class_counts, config.eval.shot_convention)[labels]
    result = {"avg_experts": float(used.mean()),
              "gflops_per_image": trunk + branch * float(used.mean())}
    for k in range(1, outputs.logits.shape[0] + 1):
        result[f"frac_experts_{k}"] = float(np.mean(used == k))
    for g, name in enumerate(shots.GROUP_NAMES):
        if np.any(groups == g):
            avg = float(used[groups == g].mean())
            result[f"avg_experts_{name}"] = avg
            result[f"gflops_per_image_{name}"] = trunk + branch * avg
    return result


def _routing_markdown(report: dict) -> list[str]:
    return (["## Expert-assignment router: experts per image", "", "| quantity | value |",
             "|---|---|"] + [f"| {k} | {v} |" for k, v in report["routing"].items()])


# config.evals.routing: registered in `ltx.methods` as 'routing'; applies to a model with the
# cascade router (stage 2 and what follows it).
ROUTING = evaluators.Evaluator(
    metrics=routing_numbers, markdown=_routing_markdown, order=30,
    check=lambda method: None if method.model_additions.get("router") == "cascade" else
    f"method {method.name!r} has no expert-assignment router (RIDE's stage 2)")


def _router_stage(cfg) -> dict:
    threshold = float(cfg.router_threshold)
    hidden, top_k = int(cfg.router_hidden), int(cfg.router_top_k)

    def loss(outputs, labels, epoch):
        del epoch
        targets = routing_targets(outputs.logits, labels)
        return routing_loss(outputs.router.T, targets, pos_weight=cfg.router_pos_weight,
                            where=outputs.mask)

    return dict(
        num_experts=int(cfg.num_experts), loss=loss, aggregate=cascade_aggregate(threshold),
        wrap_model=functools.partial(CascadeRoutedModel, hidden=hidden, top_k=top_k),
        model_additions=dict(router="cascade", router_hidden=hidden, router_top_k=top_k,
                             frozen_backbone=True),
        trainable=r"^router/")


def build(method_config, class_counts) -> dict:
    """Fields (`config.ride_method` sets them all): num_experts, stage ('experts' | 'router');
    stage 1: max_margin (0.5), scale (30), base_temperature (1), diversity_factor (lambda),
    reweight_factor (a), reweight_epoch, beta, distill, distill_temperature (1.5),
    distill_multiplicity; stage 2: router_hidden (16), router_top_k, router_pos_weight (100),
    router_threshold (0.5)."""
    cfg = method_config
    counts = np.asarray(class_counts)
    stage = cfg.stage
    if stage not in STAGES:
        raise ValueError(f"method.stage={stage!r}; expected one of {STAGES}")
    fields = _experts_stage(cfg, counts) if stage == "experts" else _router_stage(cfg)
    # Treated as balanced, as RIDE's DRW phase and LDAM margins aim at the uniform prior.
    fields["correct_prior"] = base.balanced_prior_correction
    return fields
