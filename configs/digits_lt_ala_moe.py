r"""ALA + instance-aware MoE on digits-LT, then its distillation into one ResNet-32.

    python -m ltx.train --config=configs/digits_lt_ala_moe.py --workdir=/tmp/ltx/digits_ala_moe

`ltx.methods.ala_moe` (no official code; docs/methods/ala_moe.md): RIDE's layout (ResNet-32 sharing
the stem and stage 1, 3 experts at widths 24/48, cosine heads x 30) with the instance-aware router
on the shared features; ALA loss on every expert, and from the last learning-rate decay (epoch 54 of
60) also on the router-weighted MoE output. Stage `distill`: a full-width single ResNet-32 learns
from the frozen MoE (ALA + KD at T = 2). The digits-LT schedule of the other methods: 60 epochs, SGD
0.1 Nesterov, wd 5e-4, warmup 5, x0.1 at 80% and 90%. The final metrics are the distilled model's;
the MoE's are in `stages.moe` and `<workdir>/moe/`. Arguments: ir, epochs, distill (0: the MoE
only).
"""

from ltx import config_lib
from ltx.methods.ala_moe import config as ala_config


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60, distill=1)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    full_widths = c.model.widths
    c.model.widths = (16, 24, 48)
    # The router joins at the last decay (54); DRW never starts (beyond the 60 epochs).
    c.method = ala_config.method_config(router_epoch=54, drw_epoch=600)
    if args["distill"]:
        c = ala_config.set_stages(c, full_widths=full_widths)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
