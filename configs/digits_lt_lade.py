r"""LADE on digits-LT: one ResNet-32 with a linear head, PriorCE + alpha x the LADE regulariser.

    python -m ltx.train --config=configs/digits_lt_lade.py --workdir=/tmp/ltx/digits_lade

Same trunk, optimizer and 60-epoch schedule as configs/digits_lt_ce.py, so the digits table
compares the losses; the head is linear, as LADE's `DotProductClassifier` (its regulariser works
on unbounded logits, which a cosine head x 30 would cap). `ltx.methods.lade` with the official
CIFAR-100-LT values alpha 0.1 and remine_lambda 0.01 (docs/methods/lade.md). The plain prediction
is the logits; ltx-eval's shifted test sets add log q. Arguments: ir, epochs.
"""

from ltx import config_lib
from ltx.methods import lade


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.model.head = "linear"
    c.method = lade.method_config("cifar100_lt")
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
