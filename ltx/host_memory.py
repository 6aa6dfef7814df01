"""Host memory of a training process: keep freed buffers for reuse instead of returning them.

XLA:CPU allocates every intermediate buffer of a step with `malloc` and frees it when the step
ends. glibc serves buffers above its mmap threshold (128 KiB at first) with a fresh `mmap` and
returns them with `munmap`, and trims freed memory at the top of the heap back to the system, so
every step faults the same pages in again and the kernel zeroes them. In the default digits-LT
job that was 74 mmap/munmap pairs and 27 ms of system time per 66 ms train step (2 cores, JAX
0.12). With the thresholds raised, freed buffers stay in the heap for the next step: 3 ms of
system time and 57-62 ms a step (200 steps, two runs each way), at the price of a resident
size that stays at its peak instead of shrinking between steps (docs/benchmarks.md has the
whole job against PyTorch).

`keep_freed_buffers()` is called by the training entry point (`ltx.train`); it changes nothing
but glibc's allocation policy, so results are unchanged. $LTX_KEEP_FREED_MEMORY=0 leaves
glibc's defaults; other C libraries (macOS, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "LTX_KEEP_FREED_MEMORY"
OFF = ("0", "off", "false", "no")

# mallopt(3) parameters (malloc.h) and the values set: buffers up to 256 MiB come from the heap,
# and up to 1 GiB of freed memory at its top is kept.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_buffers() -> bool:
    """Raises glibc's mmap and trim thresholds for this process; returns whether it did (False
    without glibc or with $LTX_KEEP_FREED_MEMORY=0)."""
    if os.environ.get(ENV, "").strip().lower() in OFF:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.gnu_get_libc_version  # Both exist in glibc only.
    except (OSError, AttributeError, TypeError):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
