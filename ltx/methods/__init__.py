"""Methods: one home per method, all behind one interface (`ltx.methods.base.Method`).

| home | `config.method.name` |
|---|---|
| `balpoe` | BalPoE ('balpoe'), cross-entropy ('ce') and logit adjustment ('la'), its one-expert cases |
| `ldam_drw` | LDAM-DRW ('ldam_drw') and its focal-loss baseline ('focal') |
| `sade/` | SADE's diverse experts ('sade') |
| `ride/` | RIDE ('ride'): experts, expert-assignment router, self-distillation |
| `ace/` | ACE ('ace') |
| `ala_moe/` | ALA + instance-aware MoE and its distillation ('ala_moe') |
| `cbe/` | class-balanced experts ('cbe'): baseline, per-shot experts, fusions, oracle |
| `lade` | LADE ('lade'): PriorCE plus the label-distribution-disentangling regulariser |
| `cb_loss` | class-balanced loss, softmax / sigmoid / focal ('cb_softmax', 'cb_sigmoid', 'cb_focal') |
| `balanced_softmax` | Balanced Softmax ('balanced_softmax'), CE(z + log n) |
| `decoupled/` | decoupled classifiers after a trained trunk: cRT ('crt'), LWS ('lws'), tau-normalised ('tau_norm'), NCM ('ncm') |
| `mislas` | MiSLAS ('mislas'): Mixup, then label-aware smoothing, shifted BatchNorm and LWS |
| `weight_balancing` | weight balancing ('weight_balancing'): weight decay, then MaxNorm + CB loss |

A home holds everything only that method uses: its losses, model additions, fusion, data view,
stages, finish step, evaluators and config helpers. What two or more methods share stays in
`ltx.losses`, `ltx.fusion`, `ltx.models` and `ltx.data`. A home is a module (or package) that
defines, by these names:

- `build(method_config, class_counts) -> dict` of `Method` fields but the name (required; the
  registry may name another builder of the module, e.g. `balpoe:build_ce`);
- `dataset_view(config, dataset) -> dataset` (optional): the dataset this method trains on,
  given the config's dataset (the class-balanced experts' class subsets and reject class);
- `FINISH_STEPS: {name: fn(config, workdir, stage_runs) -> final metrics}` (optional): steps
  that end a multi-stage config after its last stage, named in `config.finish`;
- `final_predictor(config, stage_runs)` (optional): the predictor of a finished multi-stage
  workdir when it is not its last stage's model (the fused class-balanced experts); it has the
  `ltx.predictor.Predictor` interface.

`stage_runs` maps stage names to their trained models (`ltx.predictor.Predictor`: `config`,
`dataset`, `method`, `step`, `outputs(split)`, `predict(split)`, `forward(images)`). An eleventh
method is one home plus one line in `_REGISTRY` (or `register(...)` from user code). A home's own evaluators (report parts,
`ltx.evaluators`) are one line in `_EVALUATORS` (or `register_evaluator(...)`).
"""

from __future__ import annotations

import importlib
import types
from typing import Callable

from ltx.methods.base import (Method, Outputs, balanced_prior_correction,  # noqa: F401
                              lambda_prior_correction, mean_aggregate, model_outputs,
                              prior_correction)

# name -> "module in this package:builder". Modules are imported when used.
_REGISTRY: dict[str, str] = {
    "balpoe": "balpoe:build",
    "ce": "balpoe:build_ce",
    "la": "balpoe:build_la",
    "ldam_drw": "ldam_drw:build_ldam_drw",
    "focal": "ldam_drw:build_focal",
    "sade": "sade:build",
    "ride": "ride:build",
    "ace": "ace:build",
    "ala_moe": "ala_moe:build",
    "cbe": "cbe:build",
    "lade": "lade:build",
    "cb_softmax": "cb_loss:build_softmax",
    "cb_sigmoid": "cb_loss:build_sigmoid",
    "cb_focal": "cb_loss:build_focal",
    "balanced_softmax": "balanced_softmax:build",
    "crt": "decoupled:build_crt",
    "lws": "decoupled:build_lws",
    "tau_norm": "decoupled:build_tau_norm",
    "ncm": "decoupled:build_ncm",
    "mislas": "mislas:build",
    "weight_balancing": "weight_balancing:build",
}
_EXTRA: dict[str, tuple[types.ModuleType | object, Callable]] = {}

# Evaluators only one home knows: name -> "module in this package:attribute" (an
# `ltx.evaluators.Evaluator`), imported when named in config.evals or by ltx-eval --evals.
_EVALUATORS: dict[str, str] = {
    "expert_priors": "balpoe:EXPERT_PRIORS",
    "test_time_aggregation": "sade.test_time:EVALUATOR",
    "routing": "ride:ROUTING",
    "fusions": "cbe:FUSION_TABLES",
}
_EXTRA_EVALUATORS: dict[str, object] = {}


def register(name: str, build_fn: Callable, home=None) -> None:
    """Registers a method from outside the package: `build_fn(method_config, class_counts) ->
    dict` of `Method` fields; `home` (a module or object) may define the optional hooks
    (`dataset_view`, ...)."""
    if name in _REGISTRY or name in _EXTRA:
        raise ValueError(f"method {name!r} is already registered")
    _EXTRA[name] = (home, build_fn)


def names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_EXTRA))


def _check_name(name: str) -> None:
    if name not in _REGISTRY and name not in _EXTRA:
        raise ValueError(f"config.method.name={name!r}; expected one of {names()}")


def home(name: str):
    """The module (or registered object) of method `name`, where its optional hooks live."""
    _check_name(name)
    if name in _EXTRA:
        return _EXTRA[name][0]
    module = _REGISTRY[name].split(":")[0]
    return importlib.import_module(f"ltx.methods.{module}")


def _builder(name: str) -> Callable:
    if name in _EXTRA:
        return _EXTRA[name][1]
    return getattr(home(name), _REGISTRY[name].split(":")[1])


def hook(name: str, attribute: str, default=None):
    """The optional hook `attribute` of method `name`'s home, or `default`."""
    return getattr(home(name), attribute, default)


def build(method_config, class_counts) -> Method:
    """Builds `config.method` for a training set with the given per-class counts."""
    name = method_config.name
    _check_name(name)
    built = _builder(name)(method_config, class_counts)
    if isinstance(built, dict):
        built = Method(name=name, **built)
    if not isinstance(built, Method):
        raise TypeError(f"the builder of method {name!r} returned {type(built).__name__}; "
                        "expected a dict of ltx.methods.Method fields or a Method")
    method = built
    if method.name != name:
        raise ValueError(f"the builder of method {name!r} returned a Method named "
                         f"{method.name!r}")
    declared = method_config.get("num_experts", method.num_experts)
    if declared != method.num_experts:
        raise ValueError(f"config.method.num_experts={declared} but method {name!r} builds "
                         f"{method.num_experts} expert(s)")
    if method.expert_lr_scales is not None and len(method.expert_lr_scales) != method.num_experts:
        raise ValueError(f"method {name!r} gives {len(method.expert_lr_scales)} expert learning-"
                         f"rate scales for {method.num_experts} experts")
    return method


def build_with_model(config, class_counts) -> tuple[Method, object]:
    """The method of `config.method` for these training counts [C] and its model: the trunk of
    `config.model` with the method's additions (no data is read, nothing is compiled)."""
    from ltx import models
    method = build(config.method, class_counts)
    trunk = models.build(config.model, num_classes=len(class_counts),
                         num_experts=method.num_experts)
    return method, method.model(trunk)


def dataset_view(config, dataset):
    """The dataset `config.method` trains on (its home's `dataset_view`, else `dataset`)."""
    view = hook(config.method.name, "dataset_view")
    return dataset if view is None else view(config, dataset)


def finish_step(config) -> Callable | None:
    """The function of `config.finish` (None when empty), from the method's `FINISH_STEPS`."""
    name = config.get("finish", "")
    if not name:
        return None
    steps = hook(config.method.name, "FINISH_STEPS", {}) or {}
    if name not in steps:
        raise ValueError(f"config.finish={name!r}; method {config.method.name!r} has "
                         f"{sorted(steps) or 'no finish steps'}")
    return steps[name]


def register_evaluator(name: str, evaluator) -> None:
    """Registers an `ltx.evaluators.Evaluator` under `name` for config.evals and ltx-eval."""
    from ltx import evaluators
    if name in _EVALUATORS or name in evaluators.BUILTIN:
        raise ValueError(f"evaluator {name!r} is already defined")
    _EXTRA_EVALUATORS[name] = evaluator


def evaluator_names() -> list[str]:
    from ltx import evaluators
    return sorted({*evaluators.BUILTIN, *_EVALUATORS, *_EXTRA_EVALUATORS})


def evaluator(name: str):
    """The `ltx.evaluators.Evaluator` named `name` (built in, a home's or registered)."""
    from ltx import evaluators
    if name in _EXTRA_EVALUATORS:
        return _EXTRA_EVALUATORS[name]
    if name in _EVALUATORS:
        module, attribute = _EVALUATORS[name].split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    if name in evaluators.BUILTIN:
        return evaluators.BUILTIN[name]
    raise ValueError(f"unknown evaluator {name!r}; expected one of {evaluator_names()}")


# Old evaluator names -> new: a config.json written before RIDE's numbers became the 'routing'
# evaluator names them 'method'.
_RENAMED_EVALUATORS = {"method": "routing"}
# Evaluators whose sections every report had before they were named in configs: a config.json
# written before then does not name them. ('fusions' applies only to fused class-balanced
# experts, so it changes no other method's report.)
_ALWAYS_REPORTED = ("fusions",)


def configured_evaluators(config) -> dict[str, dict]:
    """{name: settings} of `config.evals`, in order (a config written before evaluators were
    named in configs gets the defaults of `config_lib.base_config`)."""
    from ltx import config_lib
    evals = config.get("evals") or config_lib.base_config().evals
    named = {_RENAMED_EVALUATORS.get(name, name):
             dict(settings.to_dict() if hasattr(settings, "to_dict") else settings or {})
             for name, settings in evals.items()}
    return {**named, **{name: {} for name in _ALWAYS_REPORTED if name not in named}}


def applicable_evaluators(method: Method, named: dict[str, dict], asked=frozenset()) -> dict:
    """{name: (evaluator, settings)} of the `named` evaluators that apply to `method`, in their
    report order; one that does not apply is skipped, or raises ValueError if `asked` names it."""
    found = {name: evaluator(name) for name in named}
    chosen = {}
    for name in sorted(named, key=lambda name: (found[name].order, name)):
        reason = found[name].check(method) if found[name].check is not None else None
        if reason and name in asked:
            raise ValueError(f"evaluator {name!r} does not apply: {reason}")
        if not reason:
            chosen[name] = (found[name], named[name])
    return chosen
