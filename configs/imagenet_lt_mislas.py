r"""MiSLAS on ImageNet-LT, the official recipe (ResNet-50, Mixup 0.2 for 180 epochs, then the
classifier re-trained with label-aware smoothing, shifted BatchNorm and LWS for 10 epochs).

    python -m ltx.train --config=configs/imagenet_lt_mislas.py \
        --config.data.root=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
        --workdir=/tmp/ltx/imagenet_lt_mislas

Official recipe (dvlab-research/MiSLAS `config/imagenet/imagenet_resnet50_stage1_mixup.yaml`,
`..._stage2_mislas.yaml`; docs/methods/mislas.md):

- stage 'mixup': ResNet-50 (torchvision layout) with a linear classifier, cross-entropy on Mixup
  batches (alpha 0.2); SGD lr 0.1, momentum 0.9, no Nesterov, weight decay 5e-4, batch 256, cosine
  to 0 over 180 epochs stepped per epoch, no warmup; RandomResizedCrop 224 + flip +
  ColorJitter(0.4, 0.4, 0.4, 0);
- stage 'classifier': 10 epochs of class-balanced sampling without Mixup, label-aware smoothing
  (0.3, 0.0) 'concave', classifier lr 0.1 x 0.05, LWS lr 0.1, weight decay 5e-4, batch 256,
  cosine; shift learning on (the backbone's BatchNorm statistics re-estimated, nothing else).

The official runs use 4 GPUs with per-GPU BatchNorm statistics; ltx's are over the global batch.
The official runs keep the best validation epoch; ltx reports the last.

Reported (the official README's tables): 52.7 top-1 with ResNet-50 (15-bin ECE 1.78; stage 1 alone
45.5, ECE 7.98). The BalPoE paper quotes the same 52.7 (Table 1, row "MiSLAS (Zhong et al.,
2021)").

Arguments: arch (resnet50, the official; resnet152 for the README's deeper option), epochs
(default 180; every stage is rescaled).
"""

from ltx import config_lib
from ltx.methods import mislas


def get_config(arg=None):
    args = config_lib.parse_arg(arg, arch="resnet50", epochs=180)
    c = config_lib.large_scale_config(dataset="imagenet_lt", arch=args["arch"], mixup_alpha=0.2,
                                      num_epochs=180)
    c.model.head = "linear"
    config_lib.sgd_recipe(c, lr=0.1, batch_size=256, weight_decay=5e-4, schedule="cosine",
                          nesterov=False)
    c.method = mislas.method_config("imagenet_lt")
    _, _, lr_factor, _ = mislas.official_stage2("imagenet_lt")
    c = mislas.set_stages(c, lr_factor=lr_factor)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 180-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
