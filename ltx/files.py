"""Run files written whole or not at all.

A process killed (or a disk filled) while it writes `final_metrics.json`, `config.json` or a
report must not leave a truncated file that a later run reads as a result: each is written to a
temporary file beside it, flushed to disk, then renamed over the old one (a rename within one
file system is atomic), so a reader sees either the previous content or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_text(path: str, text: str) -> None:
    """Replaces `path` by `text` atomically; on any error the old file (if any) is unchanged
    and no temporary file is left."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
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


def write_json(path: str, value: Any, **dump_kwargs) -> None:
    """`write_text` of `json.dumps(value, **dump_kwargs)` (indent 2, sorted keys by default)."""
    dump_kwargs.setdefault("indent", 2)
    dump_kwargs.setdefault("sort_keys", True)
    write_text(path, json.dumps(value, **dump_kwargs))
