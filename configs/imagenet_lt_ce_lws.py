r"""Cross-entropy, then LWS (learnable weight scaling) on ImageNet-LT: Kang et al.'s official
recipe (ResNeXt-50).

    python -m ltx.train --config=configs/imagenet_lt_ce_lws.py \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_ce_lws_x50

Official recipe (facebookresearch/classifier-balancing; docs/methods/decoupled.md). Stage
'joint' as configs/imagenet_lt_ce_crt.py (`feat_uniform.yaml`: ResNeXt-50, linear classifier,
CE, 90 epochs, lr 0.2 at batch 512, weight decay 5e-4, cosine). Stage 'lws' (`cls_lws.yaml`,
`models/TauNormClassifier.py`): the joint classifier frozen, one scale f_c per class learnt
(from 1) on its logits, w_c . x + b_c, on the frozen trunk (BatchNorm in train mode, as the
official code); class-balanced sampling, 5 epochs of SGD lr 0.2 at batch 512, weight decay 5e-4
(on the scales too), cosine to 0. The official runs keep the epoch best on the val split; ltx
reports the last. `base=<workdir>` trains the LWS stage alone from a finished joint run.

Reported (the official README's ImageNet-LT "Classifier learning" table, row "LWS", ResNeXt50):
49.9 top-1 (many 60.2, medium 47.2, few 30.3); RIDE paper, Table 8 (ResNeXt-50), row "LWS (Kang et
al., 2020)", quotes the same.

Arguments: arch (resnext50_32x4d | resnet50 | resnet10), epochs (the joint run's 90), base.
"""

from ltx import config_lib
from ltx.methods.decoupled import config as decoupled

KIND = "lws"


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
