"""The path layer: every file ltx itself reads or writes goes through this module.

A workdir, a data root, a list file or an image may be a local path or an object-store URL
(`gs://bucket/run1`, anything `etils.epath` opens, which reaches Cloud Storage through fsspec's
gcsfs: `pip install -e '.[gcs]'`), so a TPU pod whose hosts share a bucket keeps one workdir.
Local paths take the operating system's calls directly (`~` expanded); URLs go through
`etils.epath`. Checkpoints are orbax's, which opens the same URLs itself.

Whole-or-nothing writes: a process killed (or a disk filled) while it writes
`final_metrics.json`, `config.json` or a report must not leave a truncated file that a later
run reads as a result. Locally each is written to a temporary file beside it, flushed to disk,
then renamed over the old one (a rename within one file system is atomic). On an object store a
single object write is atomic already (the object appears when its upload completes), so it is
written in place. Appends (`append_text`, for metrics.jsonl) rewrite the whole object there,
since object stores have no append.

Paths are handled as `str` throughout (an `epath.Path` is accepted wherever a path is).
"""

from __future__ import annotations

import builtins
import json
import math
import os
import posixpath
import shutil
import tempfile
from typing import IO, Any

from etils import epath

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
    """False for a URL ('gs://...', 's3://...'), True for a local path."""
    return "://" not in os.fspath(path)


def expand(path: PathLike) -> str:
    """`path` as a string, with `~` expanded for a local path."""
    path = os.fspath(path)
    return os.path.expanduser(path) if is_local(path) else path


def absolute(path: PathLike) -> str:
    """An absolute local path, or the URL unchanged."""
    path = expand(path)
    return os.path.abspath(path) if is_local(path) else path


def join(first: PathLike, *rest: str) -> str:
    """`os.path.join` for local paths, '/'-joining for URLs."""
    first = os.fspath(first)
    return os.path.join(first, *rest) if is_local(first) else posixpath.join(first, *rest)


def dirname(path: PathLike) -> str:
    path = os.fspath(path)
    if is_local(path):
        return os.path.dirname(path)
    return posixpath.dirname(path.rstrip("/"))


def basename(path: PathLike) -> str:
    path = os.fspath(path)
    return os.path.basename(path) if is_local(path) else posixpath.basename(path.rstrip("/"))


def _epath(path: PathLike) -> epath.Path:
    return epath.Path(expand(path))


def exists(path: PathLike) -> bool:
    return os.path.exists(expand(path)) if is_local(path) else _epath(path).exists()


def isfile(path: PathLike) -> bool:
    return os.path.isfile(expand(path)) if is_local(path) else _epath(path).is_file()


def isdir(path: PathLike) -> bool:
    return os.path.isdir(expand(path)) if is_local(path) else _epath(path).is_dir()


def listdir(path: PathLike) -> list[str]:
    """Sorted names of the entries of the folder `path`."""
    if is_local(path):
        return sorted(os.listdir(expand(path)))
    return sorted(p.name for p in _epath(path).iterdir())


def makedirs(path: PathLike) -> None:
    """Creates the folder `path` and its parents (no error if it exists)."""
    if is_local(path):
        os.makedirs(expand(path), exist_ok=True)
    else:
        _epath(path).mkdir(parents=True, exist_ok=True)


def remove(path: PathLike) -> None:
    if is_local(path):
        os.remove(expand(path))
    else:
        _epath(path).unlink()


def rmtree(path: PathLike, *, missing_ok: bool = True) -> None:
    if is_local(path):
        shutil.rmtree(expand(path), ignore_errors=missing_ok)
    elif not missing_ok or _epath(path).exists():
        _epath(path).rmtree()


def rename(source: PathLike, target: PathLike) -> None:
    """Moves `source` to `target` (a file or a folder; `target` must not exist)."""
    if is_local(source) and is_local(target):
        os.rename(expand(source), expand(target))
    else:
        _epath(source).rename(_epath(target))


def open(path: PathLike, mode: str = "r") -> IO:  # pylint: disable=redefined-builtin
    """A file object of `path` (text modes are UTF-8)."""
    if is_local(path):
        return builtins.open(expand(path), mode, **({} if "b" in mode else
                                                     {"encoding": "utf-8"}))
    return _epath(path).open(mode)


def read_text(path: PathLike) -> str:
    with open(path) as f:
        return f.read()


def read_bytes(path: PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_json(path: PathLike) -> Any:
    return json.loads(read_text(path))


def write_text(path: PathLike, text: str | bytes) -> None:
    """Replaces `path` by `text` (str or bytes) whole or not at all; on any error the old file
    (if any) is unchanged and no temporary file is left."""
    binary = isinstance(text, bytes)
    if not is_local(path):
        makedirs(dirname(path))
        with open(path, "wb" if binary else "w") as f:
            f.write(text)
        return
    path = expand(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else
                                                       {"encoding": "utf-8"})) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, NumPy scalars and arrays by
    Python numbers and lists, and tuples by lists (dicts and lists are copied, not changed).

    A metric that is undefined (the accuracy of a shot group with no class, a mean over no
    image) is NaN in memory and null in ltx's JSON files: strict JSON has no NaN, and Python's
    `json` would write a bare `NaN` that other readers (jq, JavaScript, pandas' strict modes)
    refuse. Readers therefore meet None where a number is undefined.
    """
    import numpy as np  # Here: the command-line tools import this module before NumPy.

    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def dumps_json(value: Any, **dump_kwargs) -> str:
    """Strict JSON text of `json_safe(value)` (no NaN or Infinity; `json.dumps` arguments)."""
    return json.dumps(json_safe(value), allow_nan=False, **dump_kwargs)


def write_json(path: PathLike, value: Any, **dump_kwargs) -> None:
    """`write_text` of `dumps_json(value, **dump_kwargs)` (indent 2, sorted keys by default):
    strict JSON, an undefined (NaN) metric written as null."""
    dump_kwargs.setdefault("indent", 2)
    dump_kwargs.setdefault("sort_keys", True)
    write_text(path, dumps_json(value, **dump_kwargs))


def append_text(path: PathLike, text: str) -> None:
    """Appends `text` to `path` (created if missing). Locally an O_APPEND write; on an object
    store the object is rewritten whole with `text` added (each version complete)."""
    if is_local(path):
        path = expand(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with builtins.open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return
    old = read_text(path) if isfile(path) else ""
    write_text(path, old + text)
