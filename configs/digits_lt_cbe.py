r"""Class-balanced experts on digits-LT: a baseline, many/medium/few experts, then their fusion.

    python -m ltx.train --config=configs/digits_lt_cbe.py --workdir=/tmp/ltx/digits_cbe
    python -m ltx.train --config=configs/digits_lt_cbe.py:reject=0 --workdir=/tmp/ltx/digits_cbe_oe

The recipe of Sharma et al. (GCPR 2020, `ltx.methods.cbe`, docs/methods/cbe.md) scaled to the
8x8 digits: one ResNet-32 with a linear classifier (the official classifier is linear), plain SGD
(momentum 0.9, no Nesterov, wd 5e-4) at lr 0.1.

- `baseline`: CE on all 10 classes, 60 epochs, warmup 5 (kept from the other digits configs for
  stability), x0.1 at epochs 48 and 54.
- `many`, `medium`, `few`: the 'cbe' shot groups of the training counts 134, 103, 80, 62, 48,
  37, 28, 22, 17, 13, i.e. {0, 1}, {2, ..., 7} and {8, 9} (resolved when each stage builds its
  data), each a (K + 1)-way classifier with a reject class, fine-tuned from the baseline at lr
  0.1 without warmup: many and medium `expert_epochs` (10) epochs, x0.1 at half (the official
  StepLR(10) with early stopping, shortened); few, whose 45 images make an epoch one step,
  3 x `expert_epochs` epochs of cosine (the official few expert also runs cosine, 60 epochs).
  Frozen blocks as the official ImageNet-LT experts: many trains everything, medium the last
  stage and the classifier (`--num_learnable 3`), few the classifier only
  (`--num_learnable 1`).
- open ratio -1 (the official 1:n option: as many reject images as an average expert class,
  118 / 46 / 15 images) instead of ImageNet's 16: digits experts have 237, 277 and 30 images, so
  r = 16 would leave the few-shot expert a single reject image (and the many expert 14).
- fusion: soft voting, KL fusion, expert selection, stacking and joint calibration (both fitted
  on the 100-image val split; calibration 60 epochs, the official optimiser), and the oracle.
  Results in `<workdir>/fusion.json`; the final metrics are joint calibration's.

`reject=0` trains the experts with outlier exposure instead (weight 0.5; the default fusion
becomes soft voting, since joint calibration needs the reject class). Arguments: ir, epochs
(baseline, default 60; rescales every stage), expert_epochs (default: 10, rescaled with
epochs), open_ratio, reject (1/0). The whole pipeline takes about three minutes on two CPU
cores, two of them the baseline's 60 epochs.
"""

from ltx import config_lib
from ltx.methods.cbe import config as cbe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60, expert_epochs=0, open_ratio=-1,
                                reject=1)
    expert_epochs = args["expert_epochs"] or 10  # 0: 10 of the 60 epochs, scaled with them.
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    cbe.configure(c, reject=bool(args["reject"]), open_ratio=args["open_ratio"])
    ratio = args["open_ratio"]
    c = cbe.cbe_stages(
        c, expert_epochs=expert_epochs, open_ratios=(ratio,) * 3, num_learnable=(-1, 3, 1),
        reject=bool(args["reject"]),
        expert_overrides={
            "schedule": {"warmup_epochs": 0,
                         "decay_epochs": tuple(e for e in (expert_epochs // 2,) if e > 0)},
            "eval": {"every_epochs": max(expert_epochs // 2, 1)},
            "checkpoint": {"every_epochs": expert_epochs}},
        per_expert_overrides={"few": {
            "num_epochs": 3 * expert_epochs,
            "schedule": {"name": "cosine", "decay_epochs": ()},
            "eval": {"every_epochs": max(3 * expert_epochs // 2, 1)},
            "checkpoint": {"every_epochs": 3 * expert_epochs}}})
    # A given expert_epochs is the experts' length as written; the default scales with epochs.
    c = config_lib.scale_epochs(c, args["epochs"],
                                keep_stages=cbe.EXPERTS if args["expert_epochs"] else ())
    return config_lib.shrink(c) if args["tiny"] else c
