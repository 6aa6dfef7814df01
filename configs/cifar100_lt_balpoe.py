r"""BalPoE on CIFAR-100-LT, the paper's standard 200-epoch setup (3 experts, Mixup 0.4).

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_balpoe.py:ir=100 \
        --workdir=/tmp/ltx/c100_balpoe_ir100

Official recipe (emasa/BalPoE-CalibratedLT, configs/mixup/standard_training;
docs/methods/balpoe.md): ResNet-32, stem + stage 1 shared, 3 full-width experts (32/64;
`reduce_dimension=False`), cosine heads x 30 (the paper says 32), gLA loss with tau_list (0, 1, 2)
= lambdas (1, 0, -1), mean over experts; SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4,
batch 128, 200 epochs, warmup 5 then x0.1 at 160 and 180; crop(4) + flip + rotation 15; Mixup alpha
0.4 on every epoch; the last epoch is evaluated (no model selection); seed 1 (the official README
averages seeds 1..5, as docs/reproduce.md does with `--seeds`).

Reported (BalPoE paper, Table 1, row "BalPoE + Mixup α* (ours)", short training): top-1 52.0 at
ratio 100, 56.3 at ratio 50, 65.1 at ratio 10; Table 3, row "BalPoE + Mixup (ours)": 52.0 ± 0.5 at
ratio 100 (many/medium/few 67.7/54.2/31.0). The long schedule (400 epochs + AutoAugment; Table 1,
long-training row "BalPoE (ours)"): 55.7 / 60.2 / 68.0 at ratios 100 / 50 / 10.

Arguments: ir (imbalance ratio, default 100), mixup (alpha, default 0.4), epochs (default 200;
rescales the schedule).
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, mixup=0.4, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=args["mixup"])
    c.method = balpoe.method_config((1.0, 0.0, -1.0))
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
