r"""Focal loss on CIFAR-100-LT: the LDAM-DRW paper's focal baseline (ResNet-32, linear head).

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_focal.py:ir=100 \
        --workdir=/tmp/ltx/c100_focal_ir100

`ltx.methods.ldam_drw.build_focal` on LDAM-DRW's schedule (kaidic/LDAM-DRW `cifar_train.py`,
`--loss_type Focal`; docs/methods/ldam_drw.md): gamma 1, no re-weighting (`drw=1` switches DRW on at
epoch 160, the paper's "Focal + DRW" row), SGD lr 0.1 without Nesterov, wd 2e-4, batch 128,
warmup 5, x0.01 at 160 and 180, crop + flip. Last epoch reported (the script keeps the best test
epoch).

Reported (RIDE paper, Table 1, row "Focal Loss ‡ (Lin et al., 2017)", ‡: copied from the LDAM-DRW
paper, Cao et al. 2019): 38.4 top-1 at ratio 100. ACE paper, Table 4, row "Focal loss": 37.4 at
ratio 100, 42.4 at ratio 50.

Arguments: ir, drw (0/1), epochs (default 200; rescales the schedule and the DRW epoch).
"""

from ltx import config_lib
from ltx.methods import ldam_drw


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, drw=0, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0, rotation=0.0)
    # DRW from epoch 160 (drw=1), else never (epoch 200 is past the last).
    c.method = ldam_drw.method_config("focal", drw_epoch=160 if args["drw"] else 200, gamma=1.0)
    c.model.head = "linear"
    c = config_lib.scale_epochs(ldam_drw.set_schedule(c), args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
