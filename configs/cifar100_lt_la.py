r"""Logit adjustment (Balanced Softmax) on CIFAR-100-LT: BalPoE's setup, one expert, lambda = 0.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_la.py:ir=100 \
        --workdir=/tmp/ltx/c100_la_ir100

One full-width ResNet-32 expert trained with CE(z + log pi, y) (tau = 1; Menon et al.'s logit
adjusted loss, equal to Balanced Softmax); everything else as configs/cifar100_lt_balpoe.py but
without Mixup.
Reported (second-hand, not checked against the original tables): logit-adjusted loss on
CIFAR-100-LT at ratio 100, 43.89 top-1 (Menon et al., Table 3, as quoted in a SADE issue thread);
that number used Menon's own schedule, this config BalPoE's recipe with lambda = 0.

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
    c.method = balpoe.la_method_config()
    return c
