r"""Balanced Softmax (Ren et al., NeurIPS 2020): CE(z + log n) in training, plain z at test, on
digits-LT.

    python -m ltx.train --config=configs/digits_lt_balanced_softmax.py --workdir=/tmp/ltx/digits_bs

`ltx.methods.balanced_softmax` (docs/methods/balanced_softmax.md) with the official CIFAR
optimizer's shape on the 60-epoch digits-LT schedule: linear head, SGD without Nesterov (weight
decay 5e-4, lr 0.1 at batch 64), 5 warmup epochs then cosine to 0; crop (pad 1), no flip.
The loss is logit adjustment with tau = 1 (`digits_lt_la.py`, which trains a cosine head on
BalPoE's step schedule). Arguments: ir, epochs.
"""

from ltx import config_lib
from ltx.methods import balanced_softmax


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.method = balanced_softmax.method_config()
    c.model.head = "linear"  # The official DotProductClassifier.
    c.optimizer.nesterov = False
    c.schedule.name = "cosine"
    c.schedule.decay_epochs = ()
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
