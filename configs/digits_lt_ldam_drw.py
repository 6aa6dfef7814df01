r"""LDAM-DRW on digits-LT: one ResNet-32, LDAM margins on a cosine head, DRW at 80% of training.

    python -m ltx.train --config=configs/digits_lt_ldam_drw.py --workdir=/tmp/ltx/digits_ldam_drw

LDAM-DRW's CIFAR recipe (docs/methods/ldam_drw.md `ltx.methods.ldam_drw`) scaled to the 60-epoch
digits-LT schedule: margins 0.5 (n_min / n_c)^(1/4), scale 30, class-balanced re-weighting
(beta 0.9999) from epoch 48 (160 of 200 in the reference), SGD without Nesterov, weight decay
2e-4, warmup 5 then x0.01 at 80% and 90%. Arguments: ir, epochs.
"""

from ltx import config_lib
from ltx.methods import ldam_drw


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.method = ldam_drw.method_config("ldam_drw", drw_epoch=48)  # At the first decay, as 160/200.
    c = config_lib.scale_epochs(ldam_drw.set_schedule(c), args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
