r"""Balanced Softmax (Ren et al., NeurIPS 2020) on CIFAR-100-LT, the official end-to-end recipe.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_balanced_softmax.py:ir=100 \
        --workdir=/tmp/ltx/c100_bs_ir100

Official recipe (jiawei-ren/BalancedMetaSoftmax-Classification
`config/CIFAR100_LT/balanced_softmax_imba200.yaml`, `run_networks.py`, `utils.py`;
docs/methods/balanced_softmax.md): ResNet-32 with a linear classifier, CE(z + log n) in
training and plain z at test; batch 512, SGD momentum 0.9 (no Nesterov), weight decay 5e-4;
13,000 iterations turned into epochs (ceil(13000 / ceil(N / 512)): 591 epochs at ratio 100, 685
at 200) of floor(N / 512) steps; lr warmed up over ceil(800 / ceil(N / 512)) epochs, then
cosine from 0.1 to 0; no Mixup. ltx differs in the warmup (ltx: 0.1 x (e + 1) / W per epoch;
official: from 0.05 to 0.1) and reports the last epoch (the official code keeps the best
validation epoch). Augmentation: ltx's CIFAR crop (pad 4) + flip; the official data loader
(`data/dataloader.py`) was not available to check.

Reported: 46.7 top-1 on CIFAR-100-LT at ratio 200 (the official README's results table, row
"Balanced Softmax (end-to-end)", ResNet-32: the repository's own re-run, not the paper's table;
`:ir=200` runs that setting).
BALMS, Balanced Softmax plus the Meta Sampler (not built in ltx), is quoted at 46.1 on
CIFAR-100-LT at ratio 100 (BalPoE paper, Table 3, row "BALMS (Ren et al., 2020)").

Arguments: ir (imbalance ratio, default 100; the official configs use 200), epochs (default: the
recipe's, which depends on ir; rescales the schedule).
"""

from ltx import config_lib
from ltx.data.long_tail import long_tail_counts
from ltx.methods import balanced_softmax


def get_config(arg=None):
    # epochs=0: the recipe's, which depends on ir (591 epochs at ratio 100).
    args = config_lib.parse_arg(arg, ir=100.0, epochs=0)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0, rotation=0.0)
    num_train = int(long_tail_counts(500, 100, args["ir"]).sum())
    epochs, warmup = balanced_softmax.official_cifar_epochs(num_train)
    c.num_epochs = epochs
    config_lib.sgd_recipe(c, lr=0.1, batch_size=512, weight_decay=5e-4, schedule="cosine",
                          warmup_epochs=warmup, nesterov=False)
    c.data.last_batch = "drop"  # The official epochs stop after floor(N / 512) steps.
    c.model.head = "linear"  # The official DotProductClassifier.
    c.eval.every_epochs = max(epochs // 10, 1)
    c.checkpoint.every_epochs = max(epochs // 10, 1)
    c.method = balanced_softmax.method_config()
    c = config_lib.scale_epochs(c, args["epochs"] or c.num_epochs)
    return config_lib.shrink(c) if args["tiny"] else c
