r"""Cross-entropy baseline on iNaturalist 2018: BalPoE's iNaturalist recipe with one expert.

    python -m ltx.train --config=configs/inaturalist2018_ce.py \
        --config.data.root=/data/inat2018 --config.data.list_dir=/data/iNaturalist18 \
        --workdir=/tmp/ltx/inat_ce

ResNet-50, one expert, cosine head x 30, lambda = 1 (plain softmax CE), no Mixup; optimizer,
schedule and augmentation as configs/inaturalist2018_balpoe.py.

Reported (BalPoE paper, Table 4, row "CE"; the same in Table 1, row "CE*"): softmax CE with
ResNet-50 on iNaturalist 2018, 65.2 top-1 (many 76.4, medium 66.8, few 60.1).

Arguments: arch, mixup (default 0), epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", mixup=0.0, epochs=100)
    c = config_lib.large_scale_config(dataset="inaturalist2018", arch=args["arch"],
                                      mixup_alpha=args["mixup"])
    c.method = balpoe.ce_method_config()
    c = config_lib.scale_epochs(c, args["epochs"])  # The 100-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
