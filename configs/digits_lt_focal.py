r"""Focal loss (gamma 1) on digits-LT: the LDAM-DRW paper's focal baseline, linear head.

    python -m ltx.train --config=configs/digits_lt_focal.py --workdir=/tmp/ltx/digits_focal

`ltx.methods.ldam_drw.build_focal` with LDAM-DRW's optimizer (no Nesterov, weight decay 2e-4,
x0.01 decays) on the 60-epoch digits-LT schedule; no re-weighting. Arguments: ir, epochs.
"""

from ltx import config_lib
from ltx.methods import ldam_drw


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.method = ldam_drw.method_config("focal", drw_epoch=60, gamma=1.0)  # DRW never starts.
    c.model.head = "linear"  # LDAM-DRW uses the cosine head only with the LDAM loss.
    c = config_lib.scale_epochs(ldam_drw.set_schedule(c), args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
