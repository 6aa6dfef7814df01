r"""Cross-entropy baseline on Places-LT: ResNet-152 fine-tuned from ImageNet-pretrained weights.

    python -m ltx.train --config=configs/places_lt_ce.py \
        --config.data.root=/data/places365 --config.data.list_dir=/data/Places_LT_v2 \
        --config.model.init_checkpoint=/ckpt/imagenet_resnet152 --workdir=/tmp/ltx/places_ce

One expert, cosine head x 30, lambda = 1 (plain softmax CE); the SADE Places-LT schedule of
configs/places_lt_balpoe.py (30 epochs, batch 128, wd 4e-4, x0.1 at 10/20, classifier lr 0.01,
backbone 0.001).

Reported: none quoted here; the tables ltx checked have no Places-LT CE number for this recipe.

Arguments: mixup (default 0), epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, mixup=0.0, epochs=30)
    c = config_lib.large_scale_config(dataset="places_lt", arch="resnet152",
                                      mixup_alpha=args["mixup"])
    c.optimizer.lr_multipliers = (("head", 10.0),)
    c.method = balpoe.ce_method_config()
    c = config_lib.scale_epochs(c, args["epochs"])  # The 30-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
