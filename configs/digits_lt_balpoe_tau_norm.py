r"""BalPoE with linear heads, then the tau-normalised classifier of every expert (Kang et al.
ICLR 2020) on digits-LT.

    python -m ltx.train --config=configs/digits_lt_balpoe_tau_norm.py \
        --workdir=/tmp/ltx/digits_balpoe_tau_norm

Stage 'joint' is configs/digits_lt_balpoe.py (3 experts, lambdas 1/0/-1) with linear heads in
place of BalPoE's cosine heads, whose normalised weights tau would not change. The finish step
'tau_norm' trains nothing: each expert's head becomes w_c / ||w_c||^tau (no bias), the experts'
logits are averaged as BalPoE does, and tau is the first of the official grid 0, 0.1, ..., 2 with
the best balanced accuracy of that average on the val split (<workdir>/tau_norm.json).
docs/methods/decoupled.md. Arguments: ir, mixup, epochs (the joint run's), tau (fixed >= 0;
default -1: choose on val).
"""

from ltx import config_lib
from ltx.methods import balpoe
from ltx.methods.decoupled import config as decoupled


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, mixup=0.0, epochs=60, tau=-1.0)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"], mixup_alpha=args["mixup"])
    c.model.head = "linear"
    c.method = balpoe.method_config((1.0, 0.0, -1.0))
    c = decoupled.add_stage(c, "tau_norm", tau_norm=args["tau"])
    c = config_lib.scale_epochs(c, args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
