"""JAX's persistent compilation cache, on by default for every ltx entry point.

The train step of a ResNet-32 takes one to several minutes to compile on a CPU, and the same
program is compiled again by every run, resume, evaluation and test. With the cache, XLA's
compiled executables are written to a directory and a later process with the same program (same
model, shapes, devices, JAX version and flags) loads them instead of compiling.

Where: `config.compile_cache_dir` if set, else $LTX_COMPILE_CACHE, else
~/.cache/ltx/jax; 'off' (either place) disables it. By default every program is written,
however quickly it compiled: reading the 20 small programs of the default job's evaluations
(metrics, about 0.06 s each to compile) takes a quarter of compiling them again. Programs that
compiled in under $LTX_COMPILE_CACHE_MIN_SECONDS seconds (default 0) are not written.

Off under `jax.distributed` on CPU (collectives over gloo): there only process 0 writes
the cache, and a resumed run whose other processes load process 0's executables hangs in its
first cross-process collective (JAX 0.12; `tests/test_multiprocess.py` resumes such a run).
"""

from __future__ import annotations

import os

ENV = "LTX_COMPILE_CACHE"
DEFAULT = "~/.cache/ltx/jax"
MIN_SECONDS_ENV = "LTX_COMPILE_CACHE_MIN_SECONDS"
MIN_COMPILE_SECONDS = 0.0
OFF = ("off", "none", "0", "false")


def directory(configured: str = "") -> str | None:
    """The cache directory to use (None: disabled), from the config value, the environment
    and the default, in that order."""
    value = configured or os.environ.get(ENV, "") or DEFAULT
    if value.strip().lower() in OFF:
        return None
    return os.path.abspath(os.path.expanduser(value))


def enable(configured: str = "") -> str | None:
    """Turns the cache on (before the first compilation, after `jax.distributed.initialize()`
    where there is one); returns its directory or None."""
    path = directory(configured)
    if path is None:
        return None
    import jax
    if jax.distributed.is_initialized() and jax.default_backend() == "cpu":
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    seconds = os.environ.get(MIN_SECONDS_ENV, "")
    try:
        seconds = float(seconds) if seconds else MIN_COMPILE_SECONDS
    except ValueError:
        raise ValueError(f"{MIN_SECONDS_ENV}={seconds!r}; expected a number of seconds") from None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
