r"""Cross-entropy baseline (one expert, lambda = 1, i.e. gLA with tau = 0) on digits-LT.

    python -m ltx.train --config=configs/digits_lt_ce.py --workdir=/tmp/ltx/digits_ce

Same trunk, head, optimizer and schedule as configs/digits_lt_balpoe.py with a single expert, so
the comparison isolates the loss and the ensemble. Arguments: ir, mixup, epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, mixup=0.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"], mixup_alpha=args["mixup"])
    c.method = balpoe.ce_method_config()
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
