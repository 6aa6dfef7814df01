"""Checkpoints of a training run: train state, data iterator position and run metadata.

Everything orbax-specific lives here, so orbax's v1 API can replace it in one place. A checkpoint
is a Composite of
- 'state': the TrainState pytree (StandardSave; restored onto the shardings of a template),
- 'data': the grain iterator state (JSON),
- 'meta': JSON metadata, including a fingerprint of the model/data config, so resuming into a
  workdir written by a different model fails with a clear message instead of a shape error.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir does not fit the configured model or data."""


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints of a run under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str, *, max_to_keep: int = 2, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True,
                enable_async_checkpointing=async_save),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict, meta: dict, *,
             force: bool = False) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=force,
        )

    def restore(self, state_template: Any, expected_meta: dict | None = None,
                step: int | None = None) -> tuple[Any, dict, dict]:
        """Restores (state, data_state, meta) from `step` (default: latest).

        Args:
          state_template: a TrainState with the target shapes and shardings.
          expected_meta: keys whose values must match the saved metadata (e.g. the model
            fingerprint); a difference raises CheckpointMismatchError naming the key.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        meta = self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        for key, value in (expected_meta or {}).items():
            if meta.get(key) != value:
                raise CheckpointMismatchError(
                    f"checkpoint step {step} in {self.directory} was written with {key}="
                    f"{meta.get(key)!r}, but the config gives {value!r}. Use a new --workdir "
                    "or the original config; nothing was overwritten.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} does not fit the configured model "
                f"({err}). Use a new --workdir or the original config.") from err
        return restored["state"], restored["data"], meta

    def reached_preemption(self, step: int) -> bool:
        return self._manager.reached_preemption(step)

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def config_fingerprint(config, num_experts: int, model_additions=None) -> str:
    """A stable JSON string of the config parts that a checkpoint's shapes depend on.

    `model_additions` are the method's additions to the model (a router, ...).
    """
    model = {k: v for k, v in config.model.to_dict().items()
             if k not in ("expert_strategy", "init_checkpoint")}
    model.update(model_additions or {})
    parts = {"model": model, "num_experts": num_experts, "data": config.data.name}
    return json.dumps(parts, sort_keys=True, default=str)


def load_pretrained(path: str) -> dict:
    """{'params': ..., 'batch_stats': ...} of the latest checkpoint of an ltx workdir.

    `path` is a workdir, its `checkpoints/` folder, or one `checkpoints/<step>` folder. The trees
    are restored as plain nested dicts of host arrays (no template needed).
    """
    path = os.path.abspath(os.path.expanduser(path))
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.isdir(os.path.join(path, "state")):
        directory, step = parent, int(name)  # One checkpoints/<step> folder.
    else:
        directory = os.path.join(path, "checkpoints")
        if not os.path.isdir(directory):
            directory = path  # The checkpoints/ folder itself.
        step = None
    manager = ocp.CheckpointManager(directory) if os.path.isdir(directory) else None
    step = step if step is not None or manager is None else manager.latest_step()
    if step is None:
        raise FileNotFoundError(
            f"model.init_checkpoint={path!r} holds no ltx checkpoint; expected a workdir, "
            "its checkpoints/ folder or a checkpoints/<step> folder")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    manager.close()
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


def _path_keys(path) -> tuple[str, ...]:
    """The names along a pytree key path, e.g. ('experts', 'head', 'kernel')."""
    return tuple(jax.tree_util.keystr(path, simple=True, separator="/").split("/"))


def transplant(target: Any, source: Any, *, experts_name: str = "experts") -> tuple[Any, dict]:
    """Copies matching leaves of `source` into `target`; returns (new tree, report).

    For each leaf of `target` (path p, shape s), in order:
    1. `source` has p with shape s: copied (same architecture);
    2. p = experts/<rest>, s = [E, *t], and `source` has experts/<rest> with shape [1, *t] or
       [*t]: broadcast to every expert (a one-expert model initialising E experts);
    3. p = experts/<rest> and `source` has <rest> at its top level with shape t: broadcast (a
       single backbone's stage initialising every expert's copy of it, as SADE does on
       Places-LT with ImageNet-pretrained layer3/layer4).
    Anything else keeps its initial value (e.g. a head with another number of classes).

    Returns the tree and {'copied': [...], 'broadcast': [...], 'kept': [...]} of '/'-paths.
    Raises ValueError when nothing matched.
    """
    flat_source = {_path_keys(path): leaf
                   for path, leaf in jax.tree_util.tree_leaves_with_path(source)}
    report = {"copied": [], "broadcast": [], "kept": []}

    def pick(path, leaf):
        keys = _path_keys(path)
        name = "/".join(keys)
        shape = tuple(leaf.shape)
        found = flat_source.get(keys)
        if found is not None and tuple(found.shape) == shape:
            report["copied"].append(name)
            return jax.numpy.asarray(found, leaf.dtype)
        if keys and keys[0] == experts_name and len(shape) >= 1:
            per_expert = shape[1:]
            for candidate in (found, flat_source.get(keys[1:])):
                if candidate is None:
                    continue
                c = tuple(candidate.shape)
                if c == per_expert or c == (1,) + per_expert:
                    report["broadcast"].append(name)
                    value = jax.numpy.reshape(jax.numpy.asarray(candidate, leaf.dtype),
                                              per_expert)
                    return jax.numpy.broadcast_to(value, shape)
        report["kept"].append(name)
        return leaf

    tree = jax.tree_util.tree_map_with_path(pick, target)
    if not report["copied"] and not report["broadcast"]:
        raise ValueError("the pretrained checkpoint shares no parameter (by name and shape) with "
                         f"the model; model parameters look like {report['kept'][:3]}")
    return tree, report
