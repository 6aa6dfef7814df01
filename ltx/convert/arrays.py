"""Any supported checkpoint file as a flat state dict {name: NumPy array}.

| file | read with |
|---|---|
| `.pth`, `.pt`, `.tar`, `.ckpt`, `.bin` | `ltx.convert.torch_pickle` (no PyTorch) |
| `.safetensors` | `safetensors.numpy` |
| `.npz` | `numpy.load(allow_pickle=False)` |

A trainer's checkpoint dict is reduced to its model weights: the first of 'state_dict', 'model',
'model_state_dict', 'net' that holds tensors (the result's `container`), else the dict itself;
the trainer dict's other entries (epoch, optimizer, config) are then dropped without being
listed. Nested dicts are flattened with '.'. DataParallel's `module.` prefix (on every key) is
removed. Entries of the weights that are not arrays (a step counter, a config, a list) are
dropped and named in the result's `skipped`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ltx import files
from ltx.convert import torch_pickle

TORCH_EXTENSIONS = (".pth", ".pt", ".tar", ".ckpt", ".bin")
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")


@dataclasses.dataclass
class StateDict:
    """Attributes: arrays {name: array} in file order; skipped: names of non-array entries;
    source: the path; container: the key of the trainer dict the weights came from, or ''."""

    arrays: dict[str, np.ndarray]
    skipped: list[str]
    source: str
    container: str = ""


def _flatten(tree: Any, prefix: str, arrays: dict, skipped: list) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _flatten(value, f"{prefix}{key}.", arrays, skipped)
    elif isinstance(tree, np.ndarray):
        arrays[prefix[:-1]] = tree
    else:
        skipped.append(prefix[:-1])


def _weights(obj: Any) -> tuple[Any, str]:
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            value = obj.get(key)
            if isinstance(value, dict) and any(isinstance(v, np.ndarray) for v in value.values()):
                return value, key
    return obj, ""


def strip_prefix(arrays: dict[str, np.ndarray], prefix: str = "module.") -> dict:
    """`arrays` without `prefix` when every key has it (DataParallel / DDP checkpoints)."""
    if arrays and all(k.startswith(prefix) for k in arrays):
        return {k[len(prefix):]: v for k, v in arrays.items()}
    return arrays


def load_state_dict(path: str) -> StateDict:
    """The flat state dict of the checkpoint at `path` (see the module docstring).

    Raises FileNotFoundError, `torch_pickle.CheckpointFormatError` (damaged or unsupported file,
    or one without any array) and `torch_pickle.UnsafeCheckpointError`.
    """
    if not files.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    ext = os.path.splitext(files.basename(path))[1].lower()
    container = ""
    if ext == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load, load_file
        try:
            # A local file is memory-mapped by name; a URL's bytes come through the path layer.
            tree = (load_file(files.expand(path)) if files.is_local(path)
                    else load(files.read_bytes(path)))
        except (SafetensorError, OSError, ValueError) as err:
            raise torch_pickle.CheckpointFormatError(f"{path}: not a readable safetensors "
                                                     f"file: {err}") from None
    elif ext == ".npz":
        try:
            with files.open(path, "rb") as file:  # Open while the archive's members are read.
                loaded = np.load(file, allow_pickle=False)
                if not isinstance(loaded, np.lib.npyio.NpzFile):  # A bare .npy array.
                    raise ValueError(f"it holds a single {type(loaded).__name__}, not an "
                                     "archive")
                with loaded as z:
                    tree = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as err:
            raise torch_pickle.CheckpointFormatError(f"{path}: not a readable .npz file (object "
                                                     f"arrays are refused): {err}") from None
    elif ext in TORCH_EXTENSIONS:
        tree, container = _weights(torch_pickle.load(path))
    else:
        raise torch_pickle.CheckpointFormatError(
            f"{path}: unknown checkpoint extension {ext!r}; expected one of "
            f"{TORCH_EXTENSIONS + ('.safetensors', '.npz')}")
    arrays: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    _flatten(tree if isinstance(tree, dict) else {"": tree}, "", arrays, skipped)
    if not arrays:
        raise torch_pickle.CheckpointFormatError(f"{path} holds no arrays")
    return StateDict(arrays=strip_prefix(arrays), skipped=skipped, source=path,
                     container=container)
