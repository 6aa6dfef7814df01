r"""LADE on iNaturalist 2018, the official recipe (ResNet-50, linear head, 200 epochs cosine).

    python -m ltx.train --config=configs/inaturalist2018_lade.py \
        --config.data.root=/data/inat2018 --config.data.list_dir=/data/iNaturalist18 \
        --workdir=/tmp/ltx/inat_lade

Official recipe (hyperconnect/LADE `config/iNaturalist18/lade.yaml` with the README command `--lr
0.1 --alpha 0.05`; docs/methods/lade.md): ResNet-50 with a linear classifier, PriorCE + 0.05 x the
LADE regulariser with the yaml's remine_lambda 0.5; SGD lr 0.1 at batch 256 (partial batches
dropped), momentum 0.9, no Nesterov, weight decay 1e-4, cosine to 0 over 200 epochs, no warmup;
RandomResizedCrop 224 + flip without colour jitter (the official iNaturalist transform). The
validation list is the test set; the official run also selects its epoch on it, ltx reports the
last.

Reported (second-hand: the BalPoE paper's Table 1, row "LADE (Hong et al., 2021)"): 70.0 top-1
with ResNet-50.

Arguments: arch, epochs.
"""

from ltx import config_lib
from ltx.methods import lade


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", epochs=200)
    c = config_lib.large_scale_config(dataset="inaturalist2018", arch=args["arch"],
                                      mixup_alpha=0.0, num_epochs=200)
    c.model.head = "linear"
    c.data.last_batch = "drop"  # `run_networks.train` stops each epoch after floor(N / B) steps.
    c.data.augment.color_jitter = (0.0, 0.0, 0.0, 0.0)
    config_lib.sgd_recipe(c, lr=0.1, batch_size=256, weight_decay=1e-4, schedule="cosine",
                          nesterov=False)
    c.method = lade.method_config("inaturalist2018")
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
