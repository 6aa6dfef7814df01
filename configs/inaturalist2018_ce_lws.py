r"""Cross-entropy, then LWS (learnable weight scaling) on iNaturalist 2018: Kang et al.'s
official recipe (ResNet-50).

    python -m ltx.train --config=configs/inaturalist2018_ce_lws.py \
        --config.data.root=/data/inat2018 --config.data.list_dir=/data/iNaturalist18 \
        --workdir=/tmp/ltx/inat_ce_lws

Official recipe (facebookresearch/classifier-balancing; docs/methods/decoupled.md). Stage
'joint' as configs/inaturalist2018_ce_crt.py (`feat_unifrom.yaml`: ResNet-50, linear classifier,
CE, 90 epochs, lr 0.2 at batch 512, weight decay 1e-4, cosine). Stage 'lws' (`cls_lws.yaml`):
the joint classifier frozen, one scale per class learnt (from 1) on its logits, on the frozen
trunk (BatchNorm in train mode, as the official code); class-balanced sampling, 5 epochs of SGD
lr 0.2 at batch 512, weight decay 1e-4 (on the scales too), cosine to 0. ltx reports the last
epoch (the official runs select on the val list, which is the test set). `base=<workdir>` trains
the LWS stage alone from a finished joint run.

Reported (the official README gives no iNaturalist number; RIDE paper, Table 3, ResNet-50, which
does not state the joint schedule): 65.9 top-1 (row "LWS": many 65.0, medium 66.3, few 65.5).

Arguments: arch (resnet50 | resnet152 | resnet10), epochs (the joint run's 90), base.
"""

from ltx import config_lib
from ltx.methods.decoupled import config as decoupled

KIND = "lws"


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", epochs=0, base="")
    c = decoupled.joint_config("inaturalist2018", arch=args["arch"])
    if args["base"]:
        c = decoupled.from_workdir(c, KIND, args["base"])
    else:
        c = decoupled.add_stage(c, KIND)
    c = config_lib.scale_epochs(c, args["epochs"] or c.num_epochs)
    c = config_lib.shrink(c) if args["tiny"] else c
    return decoupled.check_base_workdir(c) if args["base"] else c
