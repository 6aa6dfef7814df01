r"""Cross-entropy baseline on ImageNet-LT: BalPoE's ImageNet-LT recipe with one expert, lambda 1.

    python -m ltx.train --config=configs/imagenet_lt_ce.py:arch=resnet50 \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_ce_r50

One full-width expert (the trunk split is irrelevant with one expert) with a cosine head x 30,
gLA with lambda = 1 (plain softmax CE), no Mixup; optimizer, schedule and augmentation as
configs/imagenet_lt_balpoe.py.

Reported (BalPoE paper, Table 5, row "CE", the BalPoE authors' reproduction on their short
schedule; the same top-1 in Table 1, row "CE*"): softmax CE on ImageNet-LT, 47.2 top-1 with
ResNet-50 (many 66.5, medium 40.5, few 15.9) and 48.0 with ResNeXt-50 (68.1, 41.5, 14.0).

Arguments: arch (resnet50 | resnext50_32x4d | resnet10), mixup (default 0), epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", mixup=0.0, epochs=180)
    c = config_lib.large_scale_config(dataset="imagenet_lt", arch=args["arch"],
                                      mixup_alpha=args["mixup"])
    c.method = balpoe.ce_method_config()
    c = config_lib.scale_epochs(c, args["epochs"])  # The 180-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
