r"""BalPoE on CIFAR-10-LT, the standard 200-epoch setup (3 experts, Mixup 0.8).

    ltx-prepare cifar10 --tarball=cifar-10-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar10_lt_balpoe.py:ir=100 \
        --workdir=/tmp/ltx/c10_balpoe_ir100

Same recipe as configs/cifar100_lt_balpoe.py (docs/methods/balpoe.md) with CIFAR-10's Mixup alpha
0.8 and the same tau_list (0, 1, 2) = lambdas (1, 0, -1).
Reported (BalPoE paper, Table 6, row "BalPoE + Mixup α = 0.8 (ours)", short training, the setup of
this config): 84.2 ± 0.3 top-1 on CIFAR-10-LT at ratio 100, 86.2 ± 0.2 at 50, 90.2 ± 0.2 at 10. The
long schedule (400 epochs + AutoAugment; Table 6, row "BalPoE + Mixup with α = 0.8 (ours)" under
long training) gives 86.8 ± 0.2 at ratio 100.

Arguments: ir (imbalance ratio, default 100), mixup (alpha, default 0.8), epochs (default 200).
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, mixup=0.8, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar10_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=args["mixup"])
    c.method = balpoe.method_config((1.0, 0.0, -1.0))
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
