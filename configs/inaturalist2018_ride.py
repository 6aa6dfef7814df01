r"""RIDE on iNaturalist 2018: 3 reduced-width ResNet-50 experts, then the router.

    python -m ltx.train --config=configs/inaturalist2018_ride.py \
        --config.data.root=/data/inat2018 --workdir=/tmp/ltx/inat_ride

Official recipe (RIDE `configs/config_iNaturalist_resnet50_ride.json`, docs/methods/ride.md): as
ImageNet-LT (`configs/imagenet_lt_ride.py`) but lr 0.2 at batch 512 and reweight factor a 0.015;
the router sees the top-50 logits.

Reported (RIDE paper, Table 3, ResNet-50): 72.2 top-1 with 3 experts (row "RIDE (3 experts)": many
70.2, medium 72.2, few 72.7), 72.6 with 4 (row "RIDE (4 experts)"), 71.4 with 2 (row "RIDE (2
experts)").

Arguments: experts, distill (as imagenet_lt_ride), epochs (default 100; rescales every stage).
"""

from ltx import config_lib
from ltx.methods.ride import config as ride_config


def get_config(arg=None):
    args = config_lib.parse_arg(arg, experts=3, distill=0, epochs=100)
    c = config_lib.large_scale_config(dataset="inaturalist2018", arch="resnet50",
                                      mixup_alpha=0.0)
    c.model.widths = (64, 128, 192, 384)
    config_lib.sgd_recipe(c, lr=0.2, batch_size=512, weight_decay=2e-4,
                          warmup_epochs=5, decay_epochs=(60, 80))
    c.method = ride_config.method_config(num_experts=args["experts"], diversity_factor=-0.2,
                                         reweight_epoch=80, reweight_factor=0.015, router_top_k=50)
    c = ride_config.set_stages(c, distill=args["distill"], router_batch_size=512,
                               distill_warmup_epochs=5)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 100-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
