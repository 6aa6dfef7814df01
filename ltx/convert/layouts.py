"""PyTorch state dicts of the reference code mapped onto ltx's variable trees.

Source layouts (recognised by their parameter names; `backbone.` and `module.` prefixes are
removed first):

| source | names |
|---|---|
| torchvision ResNet-10/50/152, ResNeXt-50 | `conv1`, `bn1`, `layer{1..4}.{b}.{conv,bn}{1..3}`, `layer{L}.{b}.downsample.{0,1}`, `fc` |
| LDAM-DRW's CIFAR ResNet-32 | `conv1`, `bn1`, `layer{1,2,3}.{b}...`, `linear` (`NormedLinear` or `nn.Linear`) |
| RIDE / BalPoE / SADE expert ResNets (CIFAR and ImageNet) | shared `conv1`, `bn1`, `layer{L}.{b}...`; per expert `layer{L}s.{e}.{b}...`, `linears.{e}` |
| RIDE's expert-assignment models (stage 2) | the above plus `expert_help_pred_hidden_fcs.{i}`, `expert_help_pred_fc` |

ltx's names: the stem `stem/{conv,bn}`, stage `i` (= torch `layer{i+1}`) `stage{i}/block{b}/
{conv,bn}{k}` and `shortcut/{conv,bn}`, the classifier `head/kernel` (cosine: `NormedLinear`'s
[F, C] weight as it is) or `head/dense/{kernel,bias}` (linear: `nn.Linear`'s [C, F] weight
transposed). Stages below `model.num_shared_stages` live at the top of the tree, the others under
`experts/` with a leading expert axis E: a per-expert source fills expert e from its
`layer{L}s.{e}` / `linears.{e}`, a single-backbone source is copied into every expert.
Convolutions go from OIHW to HWIO. BatchNorm weight / bias / running_mean / running_var become
`scale` / `bias` and the `batch_stats` `mean` / `var` (PyTorch's running variance, its unbiased
convention, is copied as it is); `num_batches_tracked` is skipped.

`convert(state_dict, target)` returns the filled variables and a `Report`: every source tensor is
used or listed under `skipped` with the reason, every target variable is filled or listed under
`kept` (its initial value stays), and a shape that does not match raises ValueError naming both
sides. The routers map to `router/hidden{i}` and `router/output` of RIDE's router stage
(`ltx.methods.ride.router.CascadeRouter`, whose input is [top-k running-mean logits, hidden
units], the official order). ACE's LWS classifiers have no mapping yet (no released checkpoint
to check against): their tensors are reported as skipped.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

EXPERTS = "experts"
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_PREFIXES = ("module.", "backbone.", "model.")


@dataclasses.dataclass
class Report:
    """What `convert` did: ltx paths 'collection/a/b' copied, copied into every expert
    (broadcast) or kept at their initial value; source names skipped with the reason."""

    copied: list[str] = dataclasses.field(default_factory=list)
    broadcast: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        kept = ", ".join(self.kept[:4]) + (", ..." if len(self.kept) > 4 else "")
        skipped = ", ".join(list(self.skipped)[:4]) + (", ..." if len(self.skipped) > 4 else "")
        return (f"{len(self.copied)} variables copied, {len(self.broadcast)} copied into every "
                f"expert, {len(self.kept)} kept at their initial value ({kept or 'none'}), "
                f"{len(self.skipped)} source tensors skipped ({skipped or 'none'})")


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


_LAYER = re.compile(r"^layer(?P<layer>\d+)(?:s\.(?P<expert>\d+))?\.(?P<block>\d+)\.(?P<rest>.+)$")
_HEAD = re.compile(r"^(?:linears\.(?P<expert>\d+)|linear|fc)\.(?P<param>weight|bias)$")
# RIDE's expert-assignment routers (`ea_resnet_cifar.py`, `EAResNet.py`): a hidden layer per
# router on the pooled features, one output layer shared by all routers.
_ROUTER_HIDDEN = re.compile(
    r"^expert_help_pred_hidden_fcs\.(?P<index>\d+)\.(?P<param>weight|bias)$")
_ROUTER_OUTPUT = re.compile(r"^expert_help_pred_fc\.(?P<param>weight|bias)$")


def _module_and_param(rest: str) -> tuple[tuple[str, ...], str] | None:
    """'conv1.weight' -> (('conv1',), 'weight'); 'downsample.1.bias' -> (('shortcut', 'bn'),
    'bias')."""
    parts = rest.split(".")
    param = parts[-1]
    module = parts[:-1]
    if len(module) == 1 and re.fullmatch(r"(conv|bn)\d", module[0]):
        return (module[0],), param
    if module in (["downsample", "0"], ["shortcut", "0"]):
        return ("shortcut", "conv"), param
    if module in (["downsample", "1"], ["shortcut", "1"]):
        return ("shortcut", "bn"), param
    return None


def _canonical(name: str, value: np.ndarray, cosine_head: bool):
    """[(collection, ltx path without experts/, expert index or None, array)] for one source
    tensor, or a skip reason (str)."""
    if name.endswith("num_batches_tracked"):
        return "BatchNorm step counter (not used)"
    if name in ("conv1.weight",):
        return [("params", ("stem", "conv", "kernel"), None, value.transpose(2, 3, 1, 0))]
    if name.startswith("bn1.") and name.count(".") == 1:
        param = name.split(".")[1]
        if param not in _BN:
            return f"unknown BatchNorm entry {param!r}"
        collection, leaf = _BN[param]
        return [(collection, ("stem", "bn", leaf), None, value)]
    match = _LAYER.match(name)
    if match:
        stage = int(match["layer"]) - 1
        expert = None if match["expert"] is None else int(match["expert"])
        parsed = _module_and_param(match["rest"])
        if parsed is None:
            return f"no ltx counterpart for {match['rest']!r} in a residual block"
        module, param = parsed
        path = (f"stage{stage}", f"block{int(match['block'])}") + module
        if module[-1].startswith("conv"):
            if param != "weight":
                return f"convolution {param!r} (ltx convolutions have no bias)"
            return [("params", path + ("kernel",), expert, value.transpose(2, 3, 1, 0))]
        if param not in _BN:
            return f"unknown BatchNorm entry {param!r}"
        collection, leaf = _BN[param]
        return [(collection, path + (leaf,), expert, value)]
    for pattern, module in ((_ROUTER_HIDDEN, "hidden"), (_ROUTER_OUTPUT, "output")):
        match = pattern.match(name)
        if match:
            layer = f"{module}{match['index']}" if module == "hidden" else module
            leaf, array = (("kernel", value.T) if match["param"] == "weight"
                           else ("bias", value))
            return [("params", ("router", layer, leaf), None, array)]
    if name.startswith("expert_help_pred_fcs."):
        return ("a per-router output layer (share_expert_help_pred_fc=False); ltx's cascade "
                "router shares one output layer, as RIDE's configs do")
    match = _HEAD.match(name)
    if match:
        expert = None if match["expert"] is None else int(match["expert"])
        if match["param"] == "weight" and not name.startswith("fc") and cosine_head:
            return [("params", ("head", "kernel"), expert, value)]  # NormedLinear: [F, C].
        if match["param"] == "weight":
            return [("params", ("head", "dense", "kernel"), expert, value.T)]  # nn.Linear [C, F].
        return [("params", ("head", "dense", "bias"), expert, value)]
    return "no ltx counterpart (not a trunk, BatchNorm or classifier tensor of a known layout)"


def _flatten(tree: Mapping, prefix=()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def convert(state_dict: Mapping[str, np.ndarray], target: Mapping, *,
            keep_other_head: bool = False) -> tuple[dict, Report]:
    """Fills `target` ({'params': ..., 'batch_stats': ...} of NumPy arrays, e.g. a freshly
    initialised model's variables) from a PyTorch `state_dict`.

    Returns (variables: nested dicts of NumPy arrays in the target's dtypes, `Report`). Raises
    ValueError when a source tensor's shape differs from its ltx variable's (both named), when
    a per-expert source has another number of experts than the target, or when nothing matches.
    With `keep_other_head` (initialising a model for another dataset, e.g. ImageNet weights for
    Places-LT), a classifier of another shape keeps its initial value instead (reported).
    """
    flat_target = _flatten(target)
    cosine_head = any(path[-2:] == ("head", "kernel") for path in flat_target)
    report = Report()
    # (collection, path) -> {expert index or None: (source name, array)}
    found: dict[tuple[str, tuple[str, ...]], dict] = {}
    for name, value in state_dict.items():
        value = np.asarray(value)
        parsed = _canonical(_strip(name), value, cosine_head)
        if isinstance(parsed, str):
            report.skipped[name] = parsed
            continue
        for collection, path, expert, array in parsed:
            found.setdefault((collection, path), {})[expert] = (name, array)

    result: dict[tuple[str, ...], np.ndarray] = {}
    for (collection, path), sources in found.items():
        shared_key, expert_key = (collection,) + path, (collection, EXPERTS) + path
        if keep_other_head and path[0] == "head":
            reason = _other_head(sources, flat_target.get(shared_key,
                                                          flat_target.get(expert_key)))
            if reason:
                report.skipped.update({name: reason for name, _ in sources.values()})
                continue
        if shared_key in flat_target:
            result[shared_key] = _shared(shared_key, sources, flat_target[shared_key])
            report.copied.append("/".join(shared_key))
        elif expert_key in flat_target:
            want = flat_target[expert_key]
            result[expert_key] = _per_expert(expert_key, sources, want)
            broadcast = None in sources and want.shape[0] > 1
            (report.broadcast if broadcast else report.copied).append("/".join(expert_key))
        else:
            for name, _ in sources.values():
                report.skipped[name] = (f"no ltx variable {collection}/{'/'.join(path)} (or "
                                        f"under {EXPERTS}/) in this model")
    if not result:
        raise ValueError("no tensor of the checkpoint matches the ltx model: is it the right "
                         f"architecture? (first source names: {list(state_dict)[:4]})")
    report.kept = ["/".join(path) for path in flat_target if path not in result]
    variables = {path: result[path] if path in result else np.asarray(value)
                 for path, value in flat_target.items()}
    return _unflatten(variables), report


def _other_head(sources: dict, want) -> str | None:
    """Why a classifier of another number of classes than the ltx variable `want` is kept at
    its initial value, else None (the class axis is the last)."""
    got = tuple(next(iter(sources.values()))[1].shape)
    if want is None or got[-1] == want.shape[-1]:
        return None
    return (f"classifier for {got[-1]} classes, the ltx model has {want.shape[-1]}: kept at "
            "its initial value")


def _shared(key: tuple[str, ...], sources: dict, want: np.ndarray) -> np.ndarray:
    """The source array for a variable the ltx model shares between experts."""
    if None not in sources:
        raise ValueError(f"{key[0]}/{'/'.join(key[1:])} is shared in the ltx model but the "
                         f"checkpoint has it per expert ({sorted(sources)}); set "
                         "model.num_shared_stages to the checkpoint's shared stages")
    name, array = sources[None]
    if tuple(array.shape) != tuple(want.shape):
        raise ValueError(f"{name} has shape {tuple(array.shape)} but the ltx variable "
                         f"{'/'.join(key)} has {tuple(want.shape)}")
    return array.astype(want.dtype)


def _per_expert(key: tuple[str, ...], sources: dict, want: np.ndarray) -> np.ndarray:
    """The [E, ...] array for a per-expert ltx variable: the source's experts stacked, or one
    shared source tensor broadcast to every expert."""
    num_experts = want.shape[0]
    if None in sources:
        name, array = sources[None]
        if tuple(array.shape) != tuple(want.shape[1:]):
            raise ValueError(f"{name} has shape {tuple(array.shape)} but each expert's "
                             f"{'/'.join(key)} has {tuple(want.shape[1:])}")
        return np.broadcast_to(array, want.shape).astype(want.dtype)
    if sorted(sources) != list(range(num_experts)):
        raise ValueError(f"the checkpoint has experts {sorted(sources)} for {'/'.join(key)}, "
                         f"the ltx model {num_experts}; set method.num_experts to "
                         f"{len(sources)}")
    stacked = np.stack([sources[e][1] for e in range(num_experts)])
    if tuple(stacked.shape) != tuple(want.shape):
        raise ValueError(f"{sources[0][0]} (and its experts) stack to {tuple(stacked.shape)} "
                         f"but the ltx variable {'/'.join(key)} has {tuple(want.shape)}")
    return stacked.astype(want.dtype)
