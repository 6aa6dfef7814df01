"""Decoupled classifier learning (Kang et al., "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020): cRT, LWS, tau-normalisation and NCM after any finished
ltx run. See docs/methods/decoupled.md.

Official code `facebookresearch/classifier-balancing`: `run_networks.py` (training loop, model
loading, NCM statistics), `models/DotProductClassifier.py` (cRT's classifier),
`models/TauNormClassifier.py` (LWS, despite its name), `tau_norm.py` (tau-normalisation),
`models/KNNClassifier.py` (NCM), `data/ClassAwareSampler.py`, `config/<dataset>/cls_crt.yaml`
and `cls_lws.yaml`, `main.py` (the NCM flags' defaults). The home: `classifiers` (the four
classifiers as pure functions), `models` (the frozen-trunk models), `finish` (tau selection, NCM
statistics, their predictors and finish steps), `config` (config helpers, official recipes);
this module builds the methods.

A decoupled method re-balances the classifier of a trunk that another method trained (the
"joint" run: CE, BalPoE, ...), with the representation frozen. `config.method.base` names that
method; its own fields stay in `config.method` (its builder ignores the others), so the joint
stage of a config is `{'method': {'name': <base>}}` and everything else of the config is shared
(`config.add_stage`). E experts: every expert's classifier is re-balanced on its own features,
then the base method's aggregation combines them (BalPoE: the mean of the expert logits).

- 'crt' (classifier re-training): a stage that starts from the joint checkpoint with the heads
  re-initialised (`Method.reinit`), trains only them (`trainable`) on stop-gradient features
  with class-balanced sampling and cross-entropy (the mean over experts of each expert's CE).
- 'lws' (learnable weight scaling): a stage that trains only class scales f_c [E, C] (from 1)
  on the frozen trunk and heads: logits f_c (w_c . x + b_c); class-balanced sampling, CE.
- 'tau_norm': no training; the finish step `tau_norm` after the joint stage picks tau on the
  val split (the official grid 0, 0.1, ..., 2) and predicts with w_c / ||w_c||^tau, no bias.
- 'ncm': no training; the finish step `ncm` computes the class means of the training features
  and predicts by the nearest one (official default: centred, L2-normalised features,
  squared Euclidean distance).

The frozen trunk of cRT and LWS runs BatchNorm in train mode, updating its running statistics,
as the official code does (see `ltx.methods.decoupled.models`). The classifier is balanced, so a
known test prior q is applied as logits + log q (`balanced_prior_correction`); NCM's scores are
negative distances, not log-likelihoods, and get no prior correction.

Paper vs official code vs ltx: docs/methods/decoupled.md.
"""

from __future__ import annotations

import functools
from typing import Any

import ml_collections

from ltx import losses
from ltx.methods import base as base_lib
from ltx.methods.decoupled import classifiers, finish
from ltx.methods.decoupled.config import KINDS, TRAINED_KINDS
from ltx.methods.decoupled.models import (NCMModel, RetrainedHeadModel, ScaledLogitsModel,
                                          TauNormModel)
from ltx.models.multi_expert import MultiExpertNet


def _base_method(method_config, class_counts, kind: str) -> base_lib.Method:
    """The method that trained the trunk, built from `method_config` with name `base`."""
    from ltx import methods  # The registry imports this home.
    name = method_config.get("base", "")
    if not name:
        raise ValueError(f"config.method.base is missing; method {kind!r} needs the name of the "
                         "method that trained the trunk (e.g. 'ce' or 'balpoe'); "
                         "ltx.methods.decoupled.config.add_stage sets it")
    if name in KINDS:
        raise ValueError(f"config.method.base={name!r}; expected the method that trained the "
                         f"trunk, not another decoupled classifier {KINDS}")
    if name not in methods.names():
        raise ValueError(f"config.method.base={name!r}; expected one of {methods.names()}")
    if methods.hook(name, "dataset_view") is not None:
        raise ValueError(f"config.method.base={name!r} trains on its own view of the dataset; "
                         f"{kind!r} needs a trunk trained on every class")
    fields = method_config.to_dict()
    fields["name"] = name
    return methods.build(ml_collections.ConfigDict(fields), class_counts)


def _inner_model(base: base_lib.Method, kind: str, trunk):
    """The base method's model of `trunk`, which must be a trunk (not a routed wrapper)."""
    model = base.model(trunk)
    if not isinstance(model, MultiExpertNet):
        raise ValueError(f"method {kind!r} re-balances the classifier of a trunk, but base "
                         f"method {base.name!r} wraps the trunk in {type(model).__name__} (a "
                         "router or another addition on its logits)")
    return model


def _not_trained(kind: str):
    def loss(outputs, labels, epoch):
        raise ValueError(f"method {kind!r} is not trained: it is the finish step "
                         f"config.finish={kind!r} after the stage that trains the trunk "
                         "(ltx.methods.decoupled.config.add_stage)")
    return loss


def _build(kind: str, method_config, class_counts) -> dict[str, Any]:
    base = _base_method(method_config, class_counts, kind)
    fields: dict[str, Any] = dict(
        num_experts=base.num_experts, aggregate=base.aggregate,
        correct_prior=base_lib.balanced_prior_correction,
        model_additions={**base.model_additions, "decoupled": kind, "base": base.name})
    wrap = functools.partial(_inner_model, base, kind)
    if kind in TRAINED_KINDS:
        def loss(outputs, labels, epoch):
            del epoch  # No schedule: plain cross-entropy, each expert on its own logits.
            return losses.cross_entropy(outputs.logits, labels, where=outputs.mask)
        fields["loss"] = loss
    else:
        fields["loss"] = _not_trained(kind)
    if kind == "crt":
        fields.update(wrap_model=lambda trunk: RetrainedHeadModel(wrap(trunk)),
                      trainable=r"^experts/head/", reinit=r"^experts/head/")
    elif kind == "lws":
        fields.update(wrap_model=lambda trunk: ScaledLogitsModel(wrap(trunk)),
                      trainable=r"^lws_scales$")
    elif kind == "tau_norm":
        tau = float(method_config.get("tau_norm", -1.0))
        fields["model_additions"]["tau_norm"] = tau
        fields["wrap_model"] = lambda trunk: TauNormModel(wrap(trunk), tau=tau)
    else:
        feature_type = method_config.get("ncm_features", "cl2n")
        distance = method_config.get("ncm_distance", "l2")
        fields["model_additions"].update(feature_type=feature_type, distance=distance)
        # Negative distances are not log-likelihoods: adding log q has no meaning for them.
        fields["correct_prior"] = None
        fields["wrap_model"] = lambda trunk: NCMModel(wrap(trunk), feature_type=feature_type,
                                                      distance=distance)
    return fields


def build_crt(method_config, class_counts) -> dict[str, Any]:
    """cRT on the trunk of `method.base`. Fields: base (+ the base method's own fields)."""
    return _build("crt", method_config, class_counts)


def build_lws(method_config, class_counts) -> dict[str, Any]:
    """LWS on the trunk and heads of `method.base`. Fields: base (+ the base method's)."""
    return _build("lws", method_config, class_counts)


def build_tau_norm(method_config, class_counts) -> dict[str, Any]:
    """The tau-normalised classifier. Fields: base, tau_norm (tau >= 0, or -1: chosen by the
    finish step), tau_norm_grid, tau_norm_split ('val' | 'train' | 'test')."""
    return _build("tau_norm", method_config, class_counts)


def build_ncm(method_config, class_counts) -> dict[str, Any]:
    """Nearest class mean. Fields: base, ncm_features ('cl2n' | 'l2n' | 'un'), ncm_distance
    ('l2' | 'cos')."""
    return _build("ncm", method_config, class_counts)


def final_predictor(config, stage_runs):
    """A finished workdir's predictor: cRT's and LWS's last stage; for tau-normalisation and
    NCM the joint run under the re-balanced classifier (`finish.decoupled_predictor`, which
    selects tau again on its split, or computes the class means again)."""
    if config.method.name in TRAINED_KINDS:
        return stage_runs[list(stage_runs)[-1]]
    return finish.decoupled_predictor(config, stage_runs)[0]


FINISH_STEPS = {"tau_norm": finish.finish_step, "ncm": finish.finish_step}

__all__ = ["FINISH_STEPS", "KINDS", "NCMModel", "RetrainedHeadModel", "ScaledLogitsModel",
           "TauNormModel", "build_crt", "build_lws", "build_ncm", "build_tau_norm",
           "classifiers", "final_predictor"]
