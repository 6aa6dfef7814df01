r"""LADE on ImageNet-LT, the official recipe (ResNeXt-50, linear head, 180 epochs cosine).

    python -m ltx.train --config=configs/imagenet_lt_lade.py \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_lade_x50

Official recipe (hyperconnect/LADE `config/ImageNet_LT/lade.yaml` with the README command `--lr
0.05 --remine_lambda 0.5 --alpha 0.05`; docs/methods/lade.md): ResNeXt-50 (32x4d) with a linear
classifier, PriorCE + 0.05 x the LADE regulariser with remine_lambda 0.5; SGD lr 0.05 at batch 256
(partial batches dropped), momentum 0.9, no Nesterov, weight decay 5e-4, cosine to 0 over 180
epochs, no warmup; RandomResizedCrop 224 + flip + ColorJitter(0.4, 0.4, 0.4, 0). The official run
keeps the epoch best on the val split; ltx reports the last.

Reported (second-hand: the BalPoE paper's Table 1, row "LADE (Hong et al., 2021)", and Table 5):
53.0 top-1 with ResNeXt-50 (many 65.1, medium 48.9, few 33.4); no ResNet-50 number.

Arguments: arch (resnext50_32x4d | resnet50 | resnet10), epochs.
"""

from ltx import config_lib
from ltx.methods import lade


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnext50_32x4d", epochs=180)
    c = config_lib.large_scale_config(dataset="imagenet_lt", arch=args["arch"], mixup_alpha=0.0,
                                      num_epochs=180)
    c.model.head = "linear"
    c.data.last_batch = "drop"  # `run_networks.train` stops each epoch after floor(N / B) steps.
    config_lib.sgd_recipe(c, lr=0.05, batch_size=256, weight_decay=5e-4, schedule="cosine",
                          nesterov=False)
    c.method = lade.method_config("imagenet_lt")
    c = config_lib.scale_epochs(c, args["epochs"])  # The 180-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
