r"""ALA + instance-aware MoE on ImageNet-LT (ResNet-50 trunk), then distillation into one ResNet-50.

    python -m ltx.train --config=configs/imagenet_lt_ala_moe.py \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_ala_moe

No official code (docs/methods/ala_moe.md); written on RIDE's ImageNet-LT setup, which the paper
extends: stem and layer1-2 shared, 3 experts with layer3-4 at planes 192/384, cosine heads x 30 and
the instance-aware router on the layer2 features; ALA on each expert and, after the last decay
(epoch 80), on the mixture; DRW from epoch 80; SGD 0.1 at batch 256, Nesterov, wd 2e-4, 100 epochs,
warmup 5, x0.1 at 60 and 80. Stage `distill`: one full-width ResNet-50 with ALA + KD (T = 2) from
the frozen MoE.

Reported (ALA + MoE paper, Table 1, ResNet-50 on the ImageNet-LT test set): 52.3 top-1 for ALA
alone (row 9, "ALA Loss (single expert)"); 54.8 for the single expert distilled from a 6-expert MoE
(row 10, "ALA Loss (single expert) + Distill"; this config's `distill` stage distils from its
3-expert MoE); 56.1 for the 3-expert MoE (row 13, "ALA Loss + MoE (3 experts)", the `distill=0`
result).

Arguments: arch (resnet50 | resnext50_32x4d | resnet10), distill (0: the MoE only), epochs
(default 100; rescales the schedule, the DRW and router epochs included).
"""

from ltx import config_lib
from ltx.methods.ala_moe import config as ala_config


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", distill=1, epochs=100)
    c = config_lib.large_scale_config(dataset="imagenet_lt", arch=args["arch"], mixup_alpha=0.0,
                                      num_epochs=100)
    full_widths = c.model.widths
    c.model.widths = (64, 128, 192, 384)
    config_lib.sgd_recipe(c, lr=0.1, batch_size=256, weight_decay=2e-4,
                          warmup_epochs=5, decay_epochs=(60, 80))
    c.method = ala_config.method_config(router_epoch=80, drw_epoch=80)
    if args["distill"]:
        c = ala_config.set_stages(c, full_widths=full_widths)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 100-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
