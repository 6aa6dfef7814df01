r"""BalPoE on Places-LT: ResNet-152 fine-tuned from an ImageNet-pretrained checkpoint (3 experts).

    python -m ltx.train --config=configs/places_lt_balpoe.py \
        --config.data.root=/data/places365 --config.data.list_dir=/data/Places_LT_v2 \
        --config.model.init_checkpoint=/ckpt/imagenet_resnet152 --workdir=/tmp/ltx/places_balpoe

BalPoE released no Places-LT recipe; this follows SADE's (docs/methods/sade.md), which BalPoE
builds on: ResNet-152 sharing the stem and layer1-2, full-width experts (`reduce_dimension=False`)
whose layer3-4 all start from the pretrained layer3-4 (`model.init_checkpoint`: an ltx workdir of
a one-expert ResNet-152, see `ltx.checkpointing.transplant`), cosine heads x 30; 30 epochs at
global batch 128, weight decay 4e-4, x0.1 at epochs 10 and 20, no warmup; backbone and expert
stages at lr 0.001, classifiers at 0.01 (`optimizer.lr_multipliers`). Assumptions, not from any
released code: BalPoE's CIFAR lambdas (1, 0, -1) and no Mixup.

Reported: none. The BalPoE paper does not evaluate Places-LT, and no SADE Places-LT number is in
the tables ltx checked (docs/methods/sade.md).

Arguments: mixup (default 0), epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, mixup=0.0, epochs=30)
    c = config_lib.large_scale_config(dataset="places_lt", arch="resnet152",
                                      mixup_alpha=args["mixup"])
    c.method = balpoe.method_config((1.0, 0.0, -1.0))
    c.optimizer.lr_multipliers = (("head", 10.0),)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 30-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
