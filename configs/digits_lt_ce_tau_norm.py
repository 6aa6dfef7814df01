r"""Cross-entropy with a linear head, then the tau-normalised classifier (Kang et al. ICLR 2020)
on digits-LT.

    python -m ltx.train --config=configs/digits_lt_ce_tau_norm.py \
        --workdir=/tmp/ltx/digits_ce_tau_norm

Stage 'joint' is configs/digits_lt_ce.py with a linear head (the official
`DotProductClassifier`; a cosine head's weights are normalised already, so tau would change
nothing). The finish step 'tau_norm' trains nothing: it predicts with w_c / ||w_c||^tau and no
bias, tau the first of the official grid 0, 0.1, ..., 2 with the best balanced accuracy on the
val split (10 images per class), and writes the sweep to <workdir>/tau_norm.json.
docs/methods/decoupled.md. Arguments: ir, epochs (the joint run's; default 60), tau (a fixed tau
>= 0 instead of the val choice; default -1: choose).
"""

from ltx import config_lib
from ltx.methods import balpoe
from ltx.methods.decoupled import config as decoupled


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60, tau=-1.0)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.model.head = "linear"
    c.method = balpoe.ce_method_config()
    c = decoupled.add_stage(c, "tau_norm", tau_norm=args["tau"])
    c = config_lib.scale_epochs(c, args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
