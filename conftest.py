"""Test session setup: four fake CPU devices so sharding code runs as on a pod slice, and one
compilation cache that every test process shares.

XLA reads the flag once, when the backend initialises, so it must be set before any test
imports JAX. The cache (ltx.compile_cache) is a folder of the machine's temporary directory, so
that the many tests compiling the same tiny programs, in the xdist workers and in the training
subprocesses they start (which inherit LTX_COMPILE_CACHE), compile each once.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("LTX_COMPILE_CACHE",
                      os.path.join(tempfile.gettempdir(), f"ltx-test-compile-cache-{os.getuid()}"))

from ltx import compile_cache  # noqa: E402 (after the environment it reads)

compile_cache.enable()
