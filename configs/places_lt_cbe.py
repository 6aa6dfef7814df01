r"""Class-balanced experts on Places-LT: ImageNet-pretrained ResNet-152, three experts, fusion.

    python -m ltx.train --config=configs/places_lt_cbe.py \
        --config.data.root=/data/places365 --config.data.list_dir=/data/Places_LT_v2 \
        --config.model.init_checkpoint=/ckpt/imagenet_resnet152 --workdir=/tmp/ltx/places_cbe

Official recipe (`saurabhsharma1993/class-balanced-experts`, README commands and `main.py`;
docs/methods/cbe.md; `ltx.methods.cbe`):

- ResNet-152 initialised from ImageNet (official: Caffe-converted ImageNet weights; here
  `model.init_checkpoint`, an ltx workdir of a one-expert ImageNet ResNet-152, see
  `ltx.checkpointing.transplant`) with a linear classifier; SGD momentum 0.9 (no Nesterov),
  weight decay 5e-4, lr 0.01 at batch 32 on every layer (`main.py` forces both on Places).
- `baseline`: CE on all 365 classes, StepLR(10, 0.1); 30 epochs here (x0.1 at 10 and 20).
- `many` (n >= 100, 132 classes), `medium` (20 <= n < 100, 162), `few` (n < 20, 71): (K + 1)-way
  experts with a reject class fine-tuned from the baseline, reject images undersampled 1 : 16
  (many) and 1 : 8 (medium, few), StepLR(10, 0.1), 30 epochs here; medium and few train only the
  last stage and the classifier (`--num_learnable 3`), many everything.
- fusion on the 7,300-image val split (stacking; official joint calibration with per-expert
  reject corrections r = 16, 8, 8), reported on the 36,500 test images with soft voting, KL
  fusion, expert selection and the oracle; final metrics: joint calibration.

Code vs official: fixed epochs instead of early stopping (15 epochs after the best val
accuracy), no extra `fc_add` layer (2048 -> 512, ReLU) before the classifier, so the classifier
reads the 2048-d pooled features; reject images drawn with `data.reject_seed`.

Reported (CBE paper, Table 9, ResNet-152, Places-LT test set): 34.2 top-1 for the three experts
with joint calibration (row "Ours (Experts)", this config: many 37.2, medium 35.3, few 26.3). The
38.9 of row "Ours (All)" is a larger ensemble (the experts plus other base models, Sec. 4.4) that
ltx does not build.

Arguments: epochs (baseline, default 30; rescales every stage), expert_epochs (default: 30,
rescaled with epochs), reject (1 reject class / 0 outlier exposure).
"""

from ltx import config_lib
from ltx.methods.cbe import config as cbe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, epochs=30, expert_epochs=0, reject=1)
    expert_epochs = args["expert_epochs"] or 30  # 0: 30, scaled with epochs.
    c = config_lib.large_scale_config(dataset="places_lt", arch="resnet152", mixup_alpha=0.0)
    cbe.configure(c, reject=bool(args["reject"]), open_ratio=16)
    config_lib.sgd_recipe(c, lr=0.01, batch_size=32, weight_decay=5e-4, nesterov=False,
                          decay_epochs=(10, 20))
    step = {"schedule": {"decay_epochs": tuple(e for e in (10, 20) if e <= expert_epochs)},
            "eval": {"every_epochs": 5}, "checkpoint": {"every_epochs": 5}}
    c = cbe.cbe_stages(c, expert_epochs=expert_epochs, open_ratios=(16, 8, 8),
                       num_learnable=(-1, 3, 3), reject=bool(args["reject"]),
                       expert_overrides=step)
    # A given expert_epochs is the experts' length as written; the default scales with epochs.
    c = config_lib.scale_epochs(c, args["epochs"],
                                keep_stages=cbe.EXPERTS if args["expert_epochs"] else ())
    return config_lib.shrink(c) if args["tiny"] else c
