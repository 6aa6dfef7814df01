"""Training entry point.

    python -m ltx.train --config=configs/digits_lt_balpoe.py --workdir=/tmp/ltx/digits_balpoe
    ltx-train --config=configs/cifar100_lt_balpoe.py:ir=50 --workdir=... --config.seed=2

All logic lives in `ltx.stages` (multi-stage methods) and `ltx.trainer`; this file only parses
flags.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    # orbax and grain log every checkpoint step at INFO; --verbosity=0 brings them back.
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if config.distributed or os.environ.get("LTX_DISTRIBUTED") == "1":
        import jax
        jax.distributed.initialize()
    from ltx import stages  # After distributed init, which must precede any JAX computation.
    stages.train(config, _WORKDIR.value)


def run(argv=None):
    """Console-script entry (`ltx-train`); `argv` defaults to sys.argv."""
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
