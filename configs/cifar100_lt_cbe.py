r"""Class-balanced experts on CIFAR-100-LT: ResNet-32 baseline, three experts, fusion.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_cbe.py:ir=100 \
        --workdir=/tmp/ltx/c100_cbe_ir100

The paper (Sharma et al., GCPR 2020) and its code cover ImageNet-LT and Places-LT only; this is
an adaptation of their recipe (`ltx.methods.cbe`, docs/methods/cbe.md) to the usual CIFAR
setting, not a reproduction:

- ResNet-32 (LDAM-DRW's) with a linear classifier, SGD momentum 0.9 (no Nesterov, as the CBE
  code), weight decay 5e-4, lr 0.1 at batch 128, padded crop + flip.
- `baseline`: CE on all 100 classes, the standard 200 epochs (warmup 5, x0.1 at 160 and 180).
- `many` (n >= 100: 35 classes at ratio 100), `medium` (20 <= n < 100: 35), `few` (n < 20: 30):
  (K + 1)-way experts with a reject class fine-tuned from the baseline with the ImageNet-LT
  settings: reject images undersampled 1 : 16 (the few expert then gets about 20 of them),
  StepLR(10, 0.1) for 30 epochs, medium trains the last stage + classifier, few the classifier
  only (`--num_learnable` 3 and 1 mapped to ResNet-32's three stages).
- fusion: CIFAR-LT has no val split, so stacking and joint calibration are fitted with 2-fold
  cross-fitting on the 10,000 test images (each half predicted by the fit on the other half;
  `fit_split` in fusion.json); final metrics: joint calibration.

Reported: not available; the paper reports no CIFAR number.

Arguments: ir (imbalance ratio, default 100), epochs (baseline, default 200; rescales every
stage), expert_epochs (default: 30, rescaled with epochs), open_ratio, reject (1 reject class /
0 outlier exposure).
"""

from ltx import config_lib
from ltx.methods.cbe import config as cbe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, epochs=200, expert_epochs=0, open_ratio=16,
                                reject=1)
    expert_epochs = args["expert_epochs"] or 30  # 0: ImageNet-LT's 30, scaled with epochs.
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0, rotation=0.0)
    cbe.configure(c, reject=bool(args["reject"]), open_ratio=args["open_ratio"])
    ratio = args["open_ratio"]
    step = {"schedule": {"warmup_epochs": 0, "decay_factor": 0.1,
                         "decay_epochs": tuple(e for e in (10, 20) if e <= expert_epochs)},
            "eval": {"every_epochs": 10}, "checkpoint": {"every_epochs": 10}}
    c = cbe.cbe_stages(c, expert_epochs=expert_epochs, open_ratios=(ratio,) * 3,
                       num_learnable=(-1, 3, 1), reject=bool(args["reject"]),
                       expert_overrides=step)
    # A given expert_epochs is the experts' length as written; the default scales with epochs.
    c = config_lib.scale_epochs(c, args["epochs"],
                                keep_stages=cbe.EXPERTS if args["expert_epochs"] else ())
    return config_lib.shrink(c) if args["tiny"] else c
