r"""LDAM-DRW on CIFAR-100-LT, the official 200-epoch recipe.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_ldam_drw.py:ir=100 \
        --workdir=/tmp/ltx/c100_ldam_drw_ir100

Official recipe (kaidic/LDAM-DRW `cifar_train.py`; docs/methods/ldam_drw.md): ResNet-32 with a
cosine head, LDAM (max margin 0.5, s = 30), DRW from epoch 160 (beta 0.9999); SGD lr 0.1, momentum
0.9, no Nesterov, weight decay 2e-4, batch 128, warmup 5 then x0.01 at 160 and 180; crop + flip, no
rotation. The official script reports its best test epoch; ltx reports the last.

Reported (RIDE paper, Table 1, rows "LDAM + DRW (Cao et al., 2019)" and "LDAM + DRW †", the latter
reproduced with the released code): 42.0 top-1 at ratio 100 (†: many 61.5, medium 41.7, few 20.2).
BalPoE paper, Table 1, row "LDAM-DRW (Cao et al., 2019)": 42.0 / 48.0 / 58.7 at ratios 100 / 50 /
10.

Arguments: ir (imbalance ratio, default 100), epochs (default 200; rescales the schedule and
the DRW epoch).
"""

from ltx import config_lib
from ltx.methods import ldam_drw


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0, rotation=0.0)
    c.method = ldam_drw.method_config("ldam_drw", drw_epoch=160)
    c = config_lib.scale_epochs(ldam_drw.set_schedule(c), args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
