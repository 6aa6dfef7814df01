r"""Logit adjustment (one expert, lambda = 0, i.e. tau = 1, Menon et al.) on digits-LT.

    python -m ltx.train --config=configs/digits_lt_la.py --workdir=/tmp/ltx/digits_la

Same setup as configs/digits_lt_balpoe.py with a single balanced expert. Arguments: ir, mixup,
epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


@config_lib.tiny_option
def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, mixup=0.0, epochs=60)
    c = config_lib.digits_lt_config(
        imbalance_ratio=args["ir"], mixup_alpha=args["mixup"],
        num_epochs=args["epochs"])
    c.method = balpoe.la_method_config()
    return c
