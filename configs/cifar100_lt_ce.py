r"""Cross-entropy baseline on CIFAR-100-LT: BalPoE's setup with one expert and lambda = 1.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_ce.py:ir=100 \
        --workdir=/tmp/ltx/c100_ce_ir100

One full-width ResNet-32 expert with a cosine head x 30, gLA with lambda = 1 (tau = 0), which is
plain softmax cross-entropy; everything else as configs/cifar100_lt_balpoe.py but without Mixup.
Reported: plain softmax cross-entropy on CIFAR-100-LT at ratio 100 gives 39.1 top-1 in the RIDE
paper, Table 1, row "Cross Entropy (CE) †" (reproduced with RIDE's released code), and 38.8 in the
BalPoE paper, Table 1, row "CE*" (the BalPoE authors' reproduction; 43.9 at ratio 50, 57.2 at 10;
Table 3: 38.8 ± 0.6). This config runs it with BalPoE's recipe (lambda = 1), so expect the same
range.

Arguments: ir (imbalance ratio, default 100), mixup (alpha, default 0), epochs (default 200).
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, mixup=0.0, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=args["mixup"])
    c.method = balpoe.ce_method_config()
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
