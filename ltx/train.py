"""Training entry point.

    python -m ltx.train --config=configs/digits_lt_balpoe.py --workdir=/tmp/ltx/digits_balpoe
    ltx-train --config=configs/cifar100_lt_balpoe.py:ir=50 --workdir=... --config.seed=2
    ltx-train --config=configs/digits_lt_balpoe.py --workdir=... --config.pack.seeds=1,2,3

All logic lives in `ltx.stages` (multi-stage methods) and `ltx.trainer`; this file parses flags,
checks the config before JAX starts (`ltx.config_check`) and follows the error convention of
`ltx.cli` (bad input: one `ltx-train: error: ...` line, exit status 2; divergence 3; preemption
4, after saving a checkpoint).
"""

import os

from absl import flags
from ml_collections import config_flags

from ltx import cli, faults

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}")
    # A workdir that another trainer holds is refused now, not after the data and JAX setup
    # (the trainer's own lock, taken later, still decides).
    faults.check_workdir_free(_WORKDIR.value)
    config = cli.config_flag(_CONFIG.name)
    from ltx import config_check  # No JAX computation: distributed init must come first.
    config_check.check(config, built=False)
    if config.distributed or os.environ.get("LTX_DISTRIBUTED") == "1":
        initialize_distributed()
    from ltx import compile_cache, host_memory, stages
    compile_cache.enable(config.compile_cache_dir)
    host_memory.keep_freed_buffers()
    if not config.pack.seeds:
        stages.train(config, _WORKDIR.value)
        return
    results = stages.train_packed(config, _WORKDIR.value)
    failed = {w: r for w, r in results.items() if isinstance(r, faults.Diverged)}
    if failed:
        raise faults.Diverged(f"{len(failed)} of {len(results)} packed runs diverged: "
                              + "; ".join(f"{w}: {r}" for w, r in failed.items()))


# What `initialize_distributed` reads besides JAX's own JAX_COORDINATOR_ADDRESS: the
# jax.distributed.initialize() argument each sets.
DISTRIBUTED_ENV = {"JAX_NUM_PROCESSES": "num_processes", "JAX_PROCESS_ID": "process_id",
                   "LTX_HEARTBEAT_TIMEOUT_S": "heartbeat_timeout_seconds"}


def initialize_distributed() -> None:
    """`jax.distributed.initialize()` for `config.distributed=True`.

    On a cluster JAX detects (SLURM, Open MPI, Cloud TPU pods, Kubernetes) it needs nothing.
    Elsewhere every process sets JAX_COORDINATOR_ADDRESS=host:port (process 0's address),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID; LTX_HEARTBEAT_TIMEOUT_S shortens how long the others
    wait for a process that died (JAX's default: 100 s) before they abort.
    """
    import jax
    kwargs = {}
    for name, arg in DISTRIBUTED_ENV.items():
        value = os.environ.get(name, "")
        if value:
            try:
                kwargs[arg] = int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r}; expected an integer") from None
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"config.distributed=True, but jax.distributed.initialize() failed: {err}. "
            "Outside a cluster it detects (SLURM, Open MPI, a TPU pod, Kubernetes) set "
            "JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID on "
            "every process") from None


def run(argv=None):
    """Console-script entry (`ltx-train`); `argv` defaults to sys.argv."""
    cli.key_flags(__name__)
    cli.run("ltx-train", main, argv)


if __name__ == "__main__":
    run()
