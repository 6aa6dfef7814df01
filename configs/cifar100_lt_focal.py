r"""Focal loss on CIFAR-100-LT: the LDAM-DRW paper's focal baseline (ResNet-32, linear head).

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_focal.py:ir=100 \
        --workdir=/tmp/ltx/c100_focal_ir100

`ltx.methods.ldam_drw.build_focal` on LDAM-DRW's schedule (kaidic/LDAM-DRW `cifar_train.py`,
`--loss_type Focal`; docs/methods/ldam_drw.md): gamma 1, no re-weighting (`drw=1` switches DRW on at
epoch 160, the paper's "Focal + DRW" row), SGD lr 0.1 without Nesterov, wd 2e-4, batch 128,
warmup 5, x0.01 at 160 and 180, crop + flip. Last epoch reported (the script keeps the best test
epoch).

Reported (recalled from the LDAM-DRW paper's Table 2, not re-checked): top-1 error 61.59 at ratio
100 (38.41 accuracy) for focal loss.

Arguments: ir, drw (0/1).
"""

from ltx import config_lib
from ltx.methods import ldam_drw


@config_lib.tiny_option
def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, drw=0)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"], mixup_alpha=0.0, rotation=0.0)
    c.method = ldam_drw.method_config("focal", drw_epoch=160 if args["drw"] else 200, gamma=1.0)
    c.model.head = "linear"
    return ldam_drw.set_schedule(c)
