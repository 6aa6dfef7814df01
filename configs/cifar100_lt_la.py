r"""Logit adjustment (Balanced Softmax) on CIFAR-100-LT: BalPoE's setup, one expert, lambda = 0.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_la.py:ir=100 \
        --workdir=/tmp/ltx/c100_la_ir100

One full-width ResNet-32 expert trained with CE(z + log pi, y) (tau = 1; Menon et al.'s logit
adjusted loss, equal to Balanced Softmax); everything else as configs/cifar100_lt_balpoe.py but
without Mixup.
Reported (BalPoE paper, Table 1, row "LA (Menon et al., 2021)"): logit-adjusted loss on
CIFAR-100-LT, 43.9 top-1 at ratio 100 (also ACE paper, Table 2, row "Logit Adjustment"). The table
does not give that run's schedule; this config runs BalPoE's recipe with lambda = 0.

Arguments: ir (imbalance ratio, default 100), mixup (alpha, default 0), epochs (default 200).
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, mixup=0.0, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=args["mixup"])
    c.method = balpoe.la_method_config()
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
