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
from typing import Any

import jax
import orbax.checkpoint as ocp

from ltx import files


def orbax_path(directory: str) -> str:
    """The path orbax is given for a checkpoint folder: the same local path or URL (orbax
    writes `gs://` itself). Tests that map a `gs://` workdir onto a local folder with a
    file-system mock replace this function, since the mock cannot reach orbax's TensorStore
    writes."""
    return directory


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir does not fit the configured model or data."""


class CheckpointDamagedError(ValueError):
    """A checkpoint cannot be read (truncated or deleted files)."""


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints of a run under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str, *, max_to_keep: int = 2, async_save: bool = True):
        self.workdir = files.absolute(workdir)
        self.directory = files.join(self.workdir, "checkpoints")
        self._manager = ocp.CheckpointManager(
            orbax_path(self.directory),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True,
                enable_async_checkpointing=async_save),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

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
                step: int | None = None, *, may_differ: tuple[str, ...] = ()
                ) -> tuple[Any, dict, dict]:
        """Restores (state, data_state, meta) from `step` (default: latest).

        Args:
          state_template: a TrainState with the target shapes and shardings.
          expected_meta: keys whose values must match the saved metadata (the model
            fingerprint, the recipe); values that are JSON objects are compared key by key, and
            a difference raises CheckpointMismatchError naming the differing keys. A key the
            checkpoint does not have (written by an older ltx) is not compared.
          may_differ: keys of `expected_meta` whose differences are allowed (printed instead).

        Raises CheckpointDamagedError when the checkpoint cannot be read.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        if step not in self.all_steps():
            raise FileNotFoundError(f"no checkpoint of step {step} under {self.directory}; its "
                                    f"checkpoints are steps {self.all_steps()}")
        where = f"checkpoint step {step} in {self.directory}"
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # noqa: BLE001 (orbax and TensorStore raise many kinds)
            raise CheckpointDamagedError(f"{where} is damaged: its metadata cannot be read "
                                         f"({_short(err)})") from err
        allowed_changes = False
        for key, value in (expected_meta or {}).items():
            if key not in meta or meta[key] == value:
                continue
            changes = differences(meta[key], value)
            if key in may_differ:
                allowed_changes = True
                if jax.process_index() == 0:
                    print(f"Resuming {where} although the config changed: {changes}",
                          flush=True)
                continue
            raise CheckpointMismatchError(
                f"{where} was written with another {key}: {changes}. Use the original config, "
                "a new --workdir" + (", or --config.checkpoint.allow_config_change=True to "
                                     "resume anyway" if key == "recipe" else "")
                + "; nothing was overwritten.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        except Exception as err:  # noqa: BLE001
            if "fingerprint" not in meta or allowed_changes:
                raise CheckpointMismatchError(
                    f"{where} does not fit the configured model ({_short(err)}). Use a new "
                    "--workdir or the original config.") from err
            raise CheckpointDamagedError(f"{where} is damaged: its arrays cannot be read "
                                         f"({_short(err)})") from err
        return restored["state"], restored["data"], meta

    def restore_intact(self, state_template: Any, expected_meta: dict | None = None, *,
                       may_differ: tuple[str, ...] = ()) -> tuple[Any, dict, dict]:
        """`restore` of the newest checkpoint that can be read. A damaged newer one is moved to
        `<workdir>/checkpoints_damaged/` (so that training can save that step again) with one
        line saying so; CheckpointDamagedError when none is intact."""
        damaged = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(state_template, expected_meta, step,
                                        may_differ=may_differ)
            except CheckpointDamagedError as err:
                damaged.append((step, str(err)))
                continue
            for bad_step, reason in damaged:
                self._quarantine(bad_step)
                if jax.process_index() == 0:
                    print(f"{reason}; moved it to {self.workdir}/checkpoints_damaged and "
                          f"resumed from step {step}", flush=True)
            return restored
        reasons = "; ".join(reason for _, reason in damaged)
        raise CheckpointDamagedError(
            f"no intact checkpoint in {self.directory}: {reasons}. Delete the damaged step "
            "folders to train again from step 0, or use a new --workdir.")

    def _quarantine(self, step: int) -> None:
        if jax.process_index() == 0:
            target = orbax_path(files.join(self.workdir, "checkpoints_damaged"))
            files.makedirs(target)
            name, suffix = str(step), 0
            while files.exists(files.join(target, name)):
                suffix += 1
                name = f"{step}.{suffix}"
            files.rename(files.join(orbax_path(self.directory), str(step)),
                         files.join(target, name))
        self._manager.reload()

    def check_for_errors(self) -> None:
        """Raises the error of a failed asynchronous save, if one finished with an error."""
        self._manager.check_for_errors()

    def reached_preemption(self, step: int) -> bool:
        return self._manager.reached_preemption(step)

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def close_quietly(self) -> None:
        """`close` on the way out of an error: lets a save in flight finish, raises nothing."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 (the error being raised matters more)
            pass


def _short(err: BaseException, limit: int = 300) -> str:
    """The first line of an error message, at most `limit` characters."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def _flatten(value, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {prefix: value}
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(saved, expected) -> str:
    """'key: checkpoint A, config B; ...' over the dotted keys of two JSON objects (or JSON
    strings of objects) that differ."""
    a, b = _flatten(saved), _flatten(expected)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    return "; ".join(f"{k or 'value'}: checkpoint {a.get(k, '<absent>')!r}, config "
                     f"{b.get(k, '<absent>')!r}" for k in keys)


def config_fingerprint(config, num_experts: int, model_additions=None) -> str:
    """A stable JSON string of the config parts that a checkpoint's shapes depend on.

    `model_additions` are the method's additions to the model (a router, ...).
    """
    model = {k: v for k, v in config.model.to_dict().items()
             if k not in ("expert_strategy", "init_checkpoint", "dtype")}
    model.update(model_additions or {})
    parts = {"model": model, "num_experts": num_experts, "data": config.data.name}
    return json.dumps(parts, sort_keys=True, default=str)


# Data fields that may change between a run and its resume: where the files are, how many
# workers read them.
_MOVABLE_DATA_KEYS = ("data_dir", "root", "list_dir", "num_workers", "check_files")
# Fields added after runs were written: left out while they have the value that the runs
# written before them had, so those runs still resume.
_NEW_AUGMENT_DEFAULTS = {"on_device": False}


def recipe_fingerprint(config) -> str:
    """A stable JSON string of what else a resume must keep to continue the same run: the seed,
    the batch size, the schedule and optimizer, the epochs, Mixup, the data (but its location)
    and the method's config."""
    data = {k: v for k, v in config.data.to_dict().items() if k not in _MOVABLE_DATA_KEYS}
    if isinstance(data.get("augment"), dict):
        data["augment"] = {k: v for k, v in data["augment"].items()
                           if k not in _NEW_AUGMENT_DEFAULTS or v != _NEW_AUGMENT_DEFAULTS[k]}
    parts = {key: config[key].to_dict() if hasattr(config[key], "to_dict") else config[key]
             for key in ("seed", "batch_size", "num_epochs", "mixup_alpha", "mixup_epochs",
                         "optimizer", "schedule", "method") if key in config}
    parts["data"] = data
    return json.dumps(parts, sort_keys=True, default=str)


def load_pretrained(path: str) -> dict:
    """{'params': ..., 'batch_stats': ...} of the latest checkpoint of an ltx workdir.

    `path` is a workdir, its `checkpoints/` folder, or one `checkpoints/<step>` folder. The trees
    are restored as plain nested dicts of host arrays (no template needed).
    """
    path = files.absolute(path)
    parent, name = files.dirname(path), files.basename(path)
    if name.isdigit() and files.isdir(orbax_path(files.join(path, "state"))):
        directory, step = parent, int(name)  # One checkpoints/<step> folder.
    else:
        directory = files.join(path, "checkpoints")
        if not files.isdir(orbax_path(directory)):
            directory = path  # The checkpoints/ folder itself.
        step = None
    directory = orbax_path(directory)
    manager = ocp.CheckpointManager(directory) if files.isdir(directory) else None
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
