r"""ALA + instance-aware MoE on CIFAR-100-LT, then its distillation into one ResNet-32.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_ala_moe.py:ir=100 \
        --workdir=/tmp/ltx/c100_ala_moe

No official code exists (docs/methods/ala_moe.md); `ltx.methods.ala_moe` follows the paper's
description on RIDE's CIFAR setup, which the paper builds on: ResNet-32 sharing the stem and stage
1, 3 experts at widths 24/48, cosine heads x 30, the instance-aware router on the shared features;
ALA (s = 30, QF = log 2 / log(n/n_min + 1)) on each expert and, after the last learning-rate decay
(epoch 180), on the router's mixture; DRW class weights from epoch 160 as the ALALoss copies do;
RIDE's optimizer and schedule (SGD 0.1 Nesterov, wd 5e-4, batch 128, 200 epochs, warmup 5, x0.01 at
160 and 180, rotation 15). Stage `distill`: one full-width ResNet-32 (16/32/64) trained from scratch
on the same schedule with ALA + KD (T = 2) from the frozen MoE.

Reported: none. The ALA + MoE paper reports no CIFAR number (its tables cover ImageNet-LT and
iNaturalist 2018).

Arguments: ir, distill (0: the MoE only), epochs (default 200; rescales the schedule, the DRW
and router epochs included).
"""

from ltx import config_lib
from ltx.methods.ala_moe import config as ala_config


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, distill=1, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0)
    full_widths = c.model.widths
    c.model.widths = (16, 24, 48)
    c.schedule.decay_factor = 0.01
    c.method = ala_config.method_config(router_epoch=180, drw_epoch=160)
    if args["distill"]:
        c = ala_config.set_stages(c, full_widths=full_widths)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
