r"""BalPoE (3 experts, lambdas 1/0/-1) on digits-LT: the default job, a few minutes on 2 CPU cores.

    python -m ltx.train --config=configs/digits_lt_balpoe.py --workdir=/tmp/ltx/digits_balpoe

digits-LT (`ltx.data.digits`) is scikit-learn's bundled 8x8 digits made long-tailed with the
CIFAR-LT exponential profile (ratio 10: 134 ... 13 images per class, 544 in total). The recipe is
BalPoE's CIFAR one (docs/methods/balpoe.md): ResNet-32 with stem + stage 1 shared and full-width
experts, cosine heads x 30, gLA loss with lambdas (1, 0, -1) (code: tau_list 0;1;2), SGD 0.1 with
Nesterov, weight decay 5e-4, warmup 5 epochs then x0.1 at 80% and 90% of training, and an ensemble
that averages the expert logits. Adapted to 8x8 inputs: crop padding 1, no flip (digits are not
mirror-symmetric), no rotation, 60 epochs of batch 64 (the stages see 8, 4 and 2 pixels). Mixup
is off here; the argument `mixup=0.4` gives BalPoE+Mixup (docs/benchmarks.md, `ltx-sweep`).

Arguments (`--config=configs/digits_lt_balpoe.py:ir=20,mixup=0.4`): ir (imbalance ratio),
mixup (alpha), epochs.
"""

from ltx import config_lib
from ltx.methods import balpoe


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, mixup=0.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"], mixup_alpha=args["mixup"])
    c.method = balpoe.method_config((1.0, 0.0, -1.0))
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
