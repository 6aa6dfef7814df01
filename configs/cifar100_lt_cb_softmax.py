r"""Class-balanced softmax cross-entropy (Cui et al., CVPR 2019) on CIFAR-100-LT, the official recipe.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_cb_softmax.py:ir=100 \
        --workdir=/tmp/ltx/c100_cb_softmax_ir100

Official recipe (richardaecn/class-balanced-loss `src/cifar_main.py`, `cifar_im_trainval_cb.sh`;
docs/methods/cb_loss.md): ResNet-32 with a linear head; softmax cross-entropy weighted by w_y and
averaged over the batch (the TensorFlow reduction), w_c = (1 - beta) / (1 - beta^n_c) normalised to
sum to C, beta 0.9999; SGD lr 0.1 @ 128, momentum 0.9, no Nesterov, weight decay 2e-4; warmup 5,
then x0.01 at 160 and again at 180; 200 epochs; crop (pad 4) + flip, no Mixup. The official script
evaluates every 2 epochs; ltx reports the last epoch.

`drw=1` is LDAM-DRW's "CE + DRW" (kaidic/LDAM-DRW `cifar_train.py --loss_type CE --train_rule
DRW`): plain cross-entropy until epoch 160, then these weights (beta 0.9999) with PyTorch's
weighted mean (divided by the batch's sum of target weights).

Reported: none quoted here. Cui et al.'s own CIFAR table was not checked for ltx, and the later
papers ltx cites quote only CB-Focal (docs/methods/cb_loss.md).

Arguments: ir (imbalance ratio, default 100), beta (default 0.9999), drw (0/1), epochs (default
200; rescales the schedule and the DRW epoch).
"""

from ltx import config_lib
from ltx.methods import cb_loss


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, epochs=200, beta=0.9999, drw=0)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0, rotation=0.0)
    drw = bool(args["drw"])
    c.method = cb_loss.method_config(
        "softmax", beta=args["beta"], drw_epoch=160 if drw else 0,
        reduction="weights" if drw else "batch")
    c = cb_loss.set_schedule(c)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
