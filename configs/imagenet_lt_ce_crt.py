r"""Cross-entropy, then cRT on ImageNet-LT: Kang et al.'s official recipe (ResNeXt-50).

    python -m ltx.train --config=configs/imagenet_lt_ce_crt.py \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_ce_crt_x50

Official recipe (facebookresearch/classifier-balancing; docs/methods/decoupled.md). Stage
'joint' (`config/ImageNet_LT/feat_uniform.yaml`): ResNeXt-50 (32x4d) with a linear classifier,
instance-balanced sampling, CE, 90 epochs of SGD lr 0.2 at batch 512 (partial batches dropped),
momentum 0.9, no Nesterov, weight decay 5e-4, cosine to 0, no warmup; RandomResizedCrop 224 +
flip + ColorJitter(0.4, 0.4, 0.4, 0). Stage 'crt' (`cls_crt.yaml`): the classifier
re-initialised and re-trained alone on the frozen trunk (BatchNorm in train mode, as the
official code), class-balanced sampling, 10 epochs of SGD lr 0.2 at batch 512, weight decay
5e-4, cosine to 0. The official runs keep the epoch best on the val split; ltx reports the last.
`base=<workdir>` trains the cRT stage alone from a finished joint run of this config.

Reported (the official README's ImageNet-LT "Classifier learning" table, row "cRT", ResNeXt50):
49.6 top-1 (many 61.8, medium 46.2, few 27.4); the joint run 44.4 (65.9, 37.5, 7.7). RIDE paper,
Table 8 (ResNeXt-50), quotes the same: row "cRT (Kang et al., 2020)" and row "Cross Entropy (CE)
†".

Arguments: arch (resnext50_32x4d | resnet50 | resnet10), epochs (the joint run's 90; cRT keeps
1/9 of it), base.
"""

from ltx import config_lib
from ltx.methods.decoupled import config as decoupled

KIND = "crt"


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnext50_32x4d", epochs=0, base="")
    c = decoupled.joint_config("imagenet_lt", arch=args["arch"])
    if args["base"]:
        c = decoupled.from_workdir(c, KIND, args["base"])
    else:
        c = decoupled.add_stage(c, KIND)
    c = config_lib.scale_epochs(c, args["epochs"] or c.num_epochs)
    c = config_lib.shrink(c) if args["tiny"] else c
    return decoupled.check_base_workdir(c) if args["base"] else c
