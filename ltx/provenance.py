"""What produced a workdir: the software versions, the git commit and every launch.

`<workdir>/launches.jsonl` gets one JSON object per launch of a run (a fresh start or a resume):
the step it started from, the time, the command line, the versions of ltx, Python, JAX, jaxlib,
flax, optax, orbax and grain, the git commit of the ltx source tree (with a '-dirty' suffix when
it has uncommitted changes; null outside a git checkout) and the config file it wrote, if any.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

from ltx import files

PACKAGES = ("ltx", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain")
LAUNCHES_FILE = "launches.jsonl"


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """{package: version or None} of `PACKAGES`, with 'python'."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout holding the ltx package, or None (an installed wheel).

    Local paths on purpose: this is the source tree `__file__` lies in, not a workdir."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(source, ".git")):
        return None
    try:
        commit = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def record_launch(workdir: str, *, step: int, config_file: str | None) -> dict:
    """Appends this launch's record to `<workdir>/launches.jsonl` and returns it."""
    record = {"step": int(step), "time": time.time(), "argv": list(sys.argv),
              "versions": versions(), "git_commit": git_commit(), "config_file": config_file}
    files.append_text(files.join(workdir, LAUNCHES_FILE), json.dumps(record) + "\n")
    return record
