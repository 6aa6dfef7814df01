r"""MiSLAS on digits-LT: Mixup training, then the classifier re-trained with label-aware smoothing,
shifted BatchNorm and learnable weight scaling.

    python -m ltx.train --config=configs/digits_lt_mislas.py --workdir=/tmp/ltx/digits_mislas

Stage 'mixup': configs/digits_lt_ce.py's trunk, optimizer and 60-epoch schedule with a linear
head (MiSLAS's `Classifier` is a plain `nn.Linear`) and Mixup with the official CIFAR alpha 1.0,
so the digits table compares it with CE. Stage 'classifier' (`ltx.methods.mislas`,
docs/methods/mislas.md): the official stage-2 recipe at the 60-epoch scale (10 of CIFAR's 200
epochs -> 3): class-balanced sampling, no Mixup, only the classifier (lr 0.1 x 0.1) and LWS (lr
0.1) learn, SGD momentum 0.9 without Nesterov at stage 1's weight decay, cosine to 0; the
backbone's BatchNorm running statistics follow the balanced data. The stage-2 values are those of
the official CIFAR-100-LT ratio-10 config (digits-LT's default ratio is 10): smooth_head 0.2,
smooth_tail 0.0, lr factor 0.1, shift learning on (CIFAR-10-LT's configs turn it off; this one
keeps it, so the digits run exercises every part of the method).

Arguments: ir (imbalance ratio, default 10), mixup (stage-1 alpha, default 1.0), epochs (default
60; every stage is rescaled).
"""

from ltx import config_lib
from ltx.methods import mislas


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, mixup=1.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"], mixup_alpha=args["mixup"])
    c.model.head = "linear"
    c.method = mislas.method_config("cifar100_lt", 10)
    _, _, lr_factor, _ = mislas.official_stage2("cifar100_lt", 10)
    c = mislas.set_stages(c, lr_factor=lr_factor, epochs=3)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
