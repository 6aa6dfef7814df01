r"""Cross-entropy, then the tau-normalised classifier on ImageNet-LT: Kang et al.'s official
recipe (ResNeXt-50).

    python -m ltx.train --config=configs/imagenet_lt_ce_tau_norm.py \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_ce_tau_norm_x50

Official recipe (facebookresearch/classifier-balancing; docs/methods/decoupled.md). Stage
'joint' as configs/imagenet_lt_ce_crt.py (`feat_uniform.yaml`). The finish step 'tau_norm'
(`tau_norm.py`) trains nothing: the joint classifier's weights become w_c / ||w_c||^tau, the bias
is dropped, and tau is the first of the official grid 0, 0.1, ..., 2 with the best balanced
accuracy on the val split (20 images per class; the paper picks tau on val, the official script
prints every tau's accuracy on the split it is given). The sweep is in
<workdir>/tau_norm.json.

Reported (the official README's ImageNet-LT "Classifier learning" table, row "Tau-normalization",
ResNeXt50): 49.4 top-1 (many 59.1, medium 46.9, few 30.7). NCM on the same trunk (`add_stage(c,
'ncm')`, the README's row "NCM"): 47.3 (56.6, 45.3, 28.1). RIDE paper, Table 8 (ResNeXt-50), rows
"τ-norm (Kang et al., 2020)" and "NCM (Kang et al., 2020)", quotes the same.

Arguments: arch (resnext50_32x4d | resnet50 | resnet10), epochs (the joint run's 90), tau (fixed
>= 0; default -1: choose on val).
"""

from ltx import config_lib
from ltx.methods.decoupled import config as decoupled


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnext50_32x4d", epochs=90, tau=-1.0)
    c = decoupled.joint_config("imagenet_lt", arch=args["arch"])
    c = decoupled.add_stage(c, "tau_norm", tau_norm=args["tau"])
    c = config_lib.scale_epochs(c, args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
