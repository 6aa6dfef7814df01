r"""BalPoE on iNaturalist 2018, the standard 100-epoch setup (ResNet-50, 3 experts, Mixup 0.2).

    python -m ltx.train --config=configs/inaturalist2018_balpoe.py \
        --config.data.root=/data/inat2018 --config.data.list_dir=/data/iNaturalist18 \
        --workdir=/tmp/ltx/inat_balpoe

Official recipe (docs/methods/balpoe.md): ResNet-50 sharing the stem and layer1-2, three
full-width experts with cosine heads x 30; tau_list (-1, 1, 3), i.e. lambdas (2, 0, -2); SGD lr
0.2 at global batch 512, momentum 0.9, Nesterov, weight decay 2e-4, cosine over 100 epochs;
standard ImageNet augmentation; Mixup alpha 0.2; the iNaturalist 2018 validation list (3 images
per class) is the test set. Learning rate scales linearly with `--config.batch_size`.

Reported (BalPoE paper, Table 4, row "BalPoE + Mixup (ours)", short training): 75.0 top-1 on
iNaturalist 2018 with ResNet-50 (many 73.2, medium 75.5, few 74.7); the long schedule (400 epochs +
RandAugment, the same table's long-training row) gives 76.9.

Arguments: arch, mixup, epochs, randaugment (0/1).
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", mixup=0.2, epochs=100, randaugment=0)
    c = config_lib.large_scale_config(dataset="inaturalist2018", arch=args["arch"],
                                      mixup_alpha=args["mixup"],
                                      randaugment=bool(args["randaugment"]))
    c.method = balpoe.method_config((2.0, 0.0, -2.0))
    c = config_lib.scale_epochs(c, args["epochs"])  # The 100-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
