r"""Cross-entropy baseline on ImageNet-LT: BalPoE's ImageNet-LT recipe with one expert, lambda 1.

    python -m ltx.train --config=configs/imagenet_lt_ce.py:arch=resnet50 \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_ce_r50

One full-width expert (the trunk split is irrelevant with one expert) with a cosine head x 30,
gLA with lambda = 1 (plain softmax CE), no Mixup; optimizer, schedule and augmentation as
configs/imagenet_lt_balpoe.py.

Reported (second-hand, recalled from SADE's comparison table; not re-checked): softmax CE with
ResNeXt-50 on ImageNet-LT about 48 top-1 (its schedule, not necessarily this one).

Arguments: arch (resnet50 | resnext50_32x4d | resnet10), mixup (default 0), epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


@config_lib.tiny_option
def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", mixup=0.0, epochs=180)
    c = config_lib.large_scale_config(
        dataset="imagenet_lt", arch=args["arch"], mixup_alpha=args["mixup"],
        num_epochs=args["epochs"])
    c.method = balpoe.ce_method_config()
    return c
