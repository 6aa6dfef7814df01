r"""Class-balanced softmax cross-entropy (Cui et al., beta 0.9999) on digits-LT.

    python -m ltx.train --config=configs/digits_lt_cb_softmax.py --workdir=/tmp/ltx/digits_cb_softmax

`ltx.methods.cb_loss` (docs/methods/cb_loss.md): softmax cross-entropy weighted by the inverse
effective numbers, with the official CIFAR optimizer (linear head, SGD without Nesterov, weight
decay 2e-4, x0.01 decays) on the 60-epoch digits-LT schedule (warmup 5, decays at 80% and 90%),
crop (pad 1), no flip. Arguments: ir, epochs, beta, drw (1: the weights only from 80% of
training, divided by their batch sum: LDAM-DRW's CE + DRW).
"""

from ltx import config_lib
from ltx.methods import cb_loss


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60, beta=0.9999, drw=0)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    drw = bool(args["drw"])
    c.method = cb_loss.method_config(
        "softmax", beta=args["beta"], drw_epoch=48 if drw else 0,  # 80% of 60.
        reduction="weights" if drw else "batch")
    c = cb_loss.set_schedule(c)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
