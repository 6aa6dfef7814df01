r"""Cross-entropy baseline on iNaturalist 2018: BalPoE's iNaturalist recipe with one expert.

    python -m ltx.train --config=configs/inaturalist2018_ce.py \
        --config.data.root=/data/inat2018 --config.data.list_dir=/data/iNaturalist18 \
        --workdir=/tmp/ltx/inat_ce

ResNet-50, one expert, cosine head x 30, lambda = 1 (plain softmax CE), no Mixup; optimizer,
schedule and augmentation as configs/inaturalist2018_balpoe.py.

Reported (second-hand, recalled from SADE's comparison table; not re-checked): softmax CE with
ResNet-50 on iNaturalist 2018 about 64.7 top-1.

Arguments: arch, mixup (default 0), epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


@config_lib.tiny_option
def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", mixup=0.0, epochs=100)
    c = config_lib.large_scale_config(
        dataset="inaturalist2018", arch=args["arch"], mixup_alpha=args["mixup"],
        num_epochs=args["epochs"])
    c.method = balpoe.ce_method_config()
    return c
