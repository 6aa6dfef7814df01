"""Methods: what a method adds on top of the shared trunk, its loss and its aggregation.

A method is built from `config.method` and the training class counts and hands the trainer a
`Method`: pure functions of the model's `Outputs` (expert logits [E, B, C], plus router outputs
and a teacher's logits where the method has them), the model attributes it needs (e.g. a router,
stop-gradient experts) and its per-parameter optimizer rules (trainable parameters, per-expert
learning rates). Extra training stages (RIDE's router, ALA's distillation, the class-balanced
experts) are config-level: `config.stages` (see `ltx.stages`), each stage an ordinary run.

Each method keeps its whole recipe in one module of this package:

| module | methods |
|---|---|
| `balpoe` | BalPoE, and CE / logit adjustment as its one-expert cases |
| `margin` | LDAM-DRW, focal loss |
| `sade` | SADE's diverse experts |
| `ride` | RIDE: stage 1, expert-assignment router (stage 2), self-distillation |
| `ace` | ACE |
| `ala_moe` | ALA + instance-aware MoE and its distillation into one expert |
| `cbe` | class-balanced experts (baseline, per-shot experts, fusions, oracle) |

A sixth method is one more module with a `build(method_config, class_counts) -> dict` of
`Method` fields, named in `_BUILDERS`, plus its configs.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, NamedTuple

import jax


class Outputs(NamedTuple):
    """What the loss and the aggregation see of one batch.

    Attributes:
      logits: float32 [E, B, C] expert logits.
      router: float32 [B, K] router outputs of a routed model (RIDE's K = E - 1 cascade logits,
        ALA-MoE's K = E mixture logits), else None.
      teacher_logits: float32 [B, C] a distillation teacher's prediction, else None.
    """

    logits: jax.Array
    router: jax.Array | None = None
    teacher_logits: jax.Array | None = None


def model_outputs(outputs, teacher_logits=None) -> Outputs:
    """`Outputs` of a model's return value: logits [E, B, C] or {'logits': ..., 'router': ...}."""
    if isinstance(outputs, dict):
        return Outputs(outputs["logits"], outputs.get("router"), teacher_logits)
    return Outputs(outputs, None, teacher_logits)


def _no_prior_correction(logits, prior):
    raise ValueError("this method has no test-prior correction; set eval.posthoc_test_prior=False")


@dataclasses.dataclass(frozen=True)
class Method:
    """The trainer's view of a method.

    Attributes:
      name: registry name.
      num_experts: E, the leading axis of the model's logits.
      loss: `(outputs: Outputs, labels [B], epoch int32 []) -> scalar`; epoch is the 0-indexed
        epoch, traced inside the jitted step, for schedules such as DRW.
      aggregate: `(outputs: Outputs, params=None) -> logits [B, C]`, the ensemble prediction.
        `params` are the trained parameters (ACE rescales its experts by their classifier norms);
        the train step passes None, which must still give a prediction for the accuracy log.
      correct_prior: `(logits [B, C], target_prior [C]) -> logits [B, C]`, the aggregated
        logits for a known test class prior.
      model_overrides: attributes the model must have for this method (e.g. a router,
        stop-gradient experts), merged over `config.model` when the model is built.
      trainable: regex over parameter paths ('experts/head/kernel'); only matching parameters are
        updated (RIDE's router stage). None: all.
      expert_lr_scales: [E] multipliers of the learning rate of each expert's branch parameters
        (ACE's distribution-adaptive optimizer). None: all 1.
      needs_teacher: the loss reads `outputs.teacher_logits`.
      routing_report: optional `(run, state, split) -> dict` for `ltx.evaluate`.
    """

    name: str
    num_experts: int
    loss: Callable[..., jax.Array]
    aggregate: Callable[..., jax.Array]
    correct_prior: Callable[[jax.Array, jax.Array], jax.Array] = _no_prior_correction
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    trainable: str | None = None
    expert_lr_scales: tuple[float, ...] | None = None
    needs_teacher: bool = False
    routing_report: Callable[..., dict] | None = None


# name -> (module in this package, builder function); modules are imported when used.
_BUILDERS = {
    "balpoe": ("balpoe", "build"), "ldam_drw": ("margin", "build_ldam_drw"),
    "focal": ("margin", "build_focal"), "sade": ("sade", "build"), "ride": ("ride", "build"),
    "ace": ("ace", "build"), "ala_moe": ("ala_moe", "build"), "cbe": ("cbe", "build"),
}


def names() -> list[str]:
    return sorted(_BUILDERS)


def build(method_config, class_counts) -> Method:
    """Builds `config.method` for a training set with the given per-class counts."""
    name = method_config.name
    if name not in _BUILDERS:
        raise ValueError(f"config.method.name={name!r}; expected one of {names()}")
    module, builder = _BUILDERS[name]
    fields = getattr(importlib.import_module(f"ltx.methods.{module}"), builder)(method_config,
                                                                               class_counts)
    method = Method(name=name, **fields)
    declared = method_config.get("num_experts", method.num_experts)
    if declared != method.num_experts:
        raise ValueError(f"config.method.num_experts={declared} but method {name!r} builds "
                         f"{method.num_experts} expert(s)")
    if method.expert_lr_scales is not None and len(method.expert_lr_scales) != method.num_experts:
        raise ValueError(f"method {name!r} gives {len(method.expert_lr_scales)} expert learning-"
                         f"rate scales for {method.num_experts} experts")
    return method
