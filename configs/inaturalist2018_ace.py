r"""ACE (3 experts) on iNaturalist 2018: ResNet-50, 200 + 20 epochs.

    python -m ltx.train --config=configs/inaturalist2018_ace.py \
        --config.data.root=/data/inat2018 --config.data.list_dir=/data/iNaturalist18 \
        --workdir=/tmp/ltx/inat_ace

Official recipe (winterxx/ACE `configs/inat_baseline_res50.yaml`; docs/methods/ace.md;
`ltx.methods.ace`): ResNet-50 with the stem and layer1-3 shared, three experts each with its own
full-width layer4 and an LWS classifier; ACE's loss with experts 1-2 behind a stop-gradient,
per-expert learning rates scaled linearly by the experts' data shares (the ACE paper's Eq. 7; the
code's `SGD_group` is not released), planner thresholds (0.4, 0.1), the group average with
weight-norm rescaling. SGD lr
0.1 at global batch 512, momentum 0.9, Nesterov, weight decay 1e-4, warmup 5, 220 epochs
(MAX_EPOCH 200 + UNMIX_EPOCH 20), lr times 0.1 at 140 and 180; RandomResizedCrop 224 + flip +
ColorJitter(0.4, 0.4, 0.4, 0); Mixup alpha 0.3 on 0-indexed epochs < 199, the last 21 epochs
mixup-free. The iNaturalist 2018 validation list is the test set (the code also selects its best
epoch on it; ltx reports the last). A different `--config.batch_size` scales the learning rate
linearly. Evaluation uses ACE's shot convention (few: n <= 20).

Reported (ACE paper, Table 3, row "ACE (3 experts)", iNaturalist column): 72.9 top-1 on iNaturalist
2018 with ResNet-50.

Arguments: mixup (alpha, default 0.3), lr_scaling, epochs (default 220; rescales the schedule,
the Mixup tail included).
"""

from ltx import config_lib
from ltx.methods.ace import config as ace


def get_config(arg=None):
    args = config_lib.parse_arg(arg, mixup=0.3, lr_scaling="linear", epochs=220)
    c = config_lib.large_scale_config(dataset="inaturalist2018", arch="resnet50",
                                      mixup_alpha=args["mixup"], num_epochs=220)
    ace.set_recipe(c, thresholds=ace.THRESHOLDS["inaturalist2018"], max_epoch=200,
                   unmix_epoch=20, lr=0.1, decay_epochs=(140, 180), warmup_epochs=5,
                   mixup_alpha=args["mixup"], num_shared_stages=3)
    c.method.lr_scaling = args["lr_scaling"]
    c.batch_size = 512
    c.optimizer.reference_batch_size = 512
    c.optimizer.weight_decay = 1e-4
    c = config_lib.scale_epochs(c, args["epochs"])  # The 220-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
