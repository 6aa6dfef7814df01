r"""SADE on ImageNet-LT: three diverse experts on ResNet-50 / ResNeXt-50 (180 epochs).

    python -m ltx.train --config=configs/imagenet_lt_sade.py:arch=resnext50_32x4d \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_sade_x50

Official recipe (Vanint/SADE-AgnosticLT, `config_imagenet_lt_resnext50_sade.json`;
docs/methods/sade.md): stem and layer1-2 shared, experts with reduced layer3-4 (planes 192/384),
cosine heads x 30; the diverse-expert loss with tau 2; SGD lr 0.025 at batch 64, Nesterov, wd 5e-4,
180 epochs cosine; RandomResizedCrop + flip + ColorJitter. Prediction: the mean of the expert logits
(the test-time self-supervised aggregation is not implemented).

Reported (SADE under its earlier name TADE, as quoted by the BalPoE paper, Table 5, row "TADE
(Zhang et al., 2021)"): ResNeXt-50 58.8 top-1 on the uniform test set (many 66.5, medium 57.0, few
43.5). No ResNet-50 number is in the tables ltx checked.

Arguments: arch (resnet50 | resnext50_32x4d | resnet10), epochs.
"""

import ml_collections

from ltx import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnext50_32x4d", epochs=180)
    c = config_lib.large_scale_config(dataset="imagenet_lt", arch=args["arch"], mixup_alpha=0.0)
    c.model.widths = (64, 128, 192, 384)
    c.method = ml_collections.ConfigDict(dict(name="sade", num_experts=3, tau=2.0))
    c = config_lib.scale_epochs(c, args["epochs"])  # The 180-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
