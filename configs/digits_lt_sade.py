r"""SADE's three diverse experts (forward, uniform, inverse with tau 2) on digits-LT.

    python -m ltx.train --config=configs/digits_lt_sade.py --workdir=/tmp/ltx/digits_sade

`ltx.methods.sade`: reduced expert widths (stages 24/48 after a 16-wide shared stage), cosine
heads x 30, the summed diverse-expert loss, BalPoE's schedule without Mixup, mean of the expert
logits at test time. Arguments: ir, epochs.
"""

import ml_collections

from ltx import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.method = ml_collections.ConfigDict(dict(name="sade", num_experts=3, tau=2.0))
    c.model.widths = (16, 24, 48)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
