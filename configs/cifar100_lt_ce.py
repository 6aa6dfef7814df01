r"""Cross-entropy baseline on CIFAR-100-LT: BalPoE's setup with one expert and lambda = 1.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_ce.py:ir=100 \
        --workdir=/tmp/ltx/c100_ce_ir100

One full-width ResNet-32 expert with a cosine head x 30, gLA with lambda = 1 (tau = 0), which is
plain softmax cross-entropy; everything else as configs/cifar100_lt_balpoe.py but without Mixup.
Reported (second-hand, not checked against the original tables): plain softmax cross-entropy
on CIFAR-100-LT at ratio 100 gives 41.4 top-1 in the SADE README's table and 39.1 in RIDE's model
zoo (the LDAM-DRW recipe); this config runs it with BalPoE's recipe (lambda = 1), so expect the
same range.

Arguments: ir (imbalance ratio, default 100), mixup (alpha, default 0).
"""

from ltx import config_lib
from ltx.methods import balpoe


@config_lib.tiny_option
def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, mixup=0.0)
    c = config_lib.cifar_lt_config(
        dataset="cifar100_lt", imbalance_ratio=args["ir"],
        mixup_alpha=args["mixup"])
    c.method = balpoe.ce_method_config()
    return c
