r"""Class-balanced focal loss (Cui et al., CVPR 2019) on CIFAR-10-LT, the official recipe.

    ltx-prepare cifar10 --tarball=cifar-10-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar10_lt_cb_focal.py:ir=100 \
        --workdir=/tmp/ltx/c10_cb_focal_ir100

Official recipe (richardaecn/class-balanced-loss `src/cifar_main.py`, `cifar_im_trainval_cb.sh`;
docs/methods/cb_loss.md): ResNet-32 with a linear head; sigmoid focal loss (gamma 1) weighted by
w_y, logits starting at the official bias -log(C - 1), w_c = (1 - beta) / (1 - beta^n_c) normalised
to sum to C, beta 0.9999; SGD lr 0.1 @ 128, momentum 0.9, no Nesterov, weight decay 2e-4; warmup 5,
then x0.01 at 160 and again at 180; 200 epochs; crop (pad 4) + flip, no Mixup. The official script
evaluates every 2 epochs; ltx reports the last epoch.

Reported (second-hand: quoted by later papers, not Cui et al.'s own table): CB-Focal top-1 on
CIFAR-10-LT with ResNet-32, 84.4 / 79.3 / 74.6 at ratios 10 / 50 / 100 (BalPoE paper, Table 6, row
"CB-Focal (Cui et al., 2019)"); 74.6 at ratio 100 and 79.3 at 50 (ACE paper, Table 4, row "CB Focal
loss").

Arguments: ir (imbalance ratio, default 100), beta (default 0.9999), gamma (default 1), epochs
(default 200; rescales the schedule).
"""

from ltx import config_lib
from ltx.methods import cb_loss


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, epochs=200, beta=0.9999, gamma=1.0)
    c = config_lib.cifar_lt_config(dataset="cifar10_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0, rotation=0.0)
    c.method = cb_loss.method_config("focal", beta=args["beta"], gamma=args["gamma"])
    c = cb_loss.set_schedule(c)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
