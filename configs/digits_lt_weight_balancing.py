r"""Weight balancing on digits-LT: cross-entropy with a large weight decay, then the classifier
fine-tuned with the class-balanced loss, weight decay and MaxNorm.

    python -m ltx.train --config=configs/digits_lt_weight_balancing.py \
        --workdir=/tmp/ltx/digits_weight_balancing

The official CIFAR-100-LT recipe (`ltx.methods.weight_balancing`, docs/methods/weight_balancing.md)
on digits-LT's trunk (ResNet-32 with a linear head) and 60-epoch length: stage 'features' is
cross-entropy with SGD lr 0.01, momentum 0.9 without Nesterov, weight decay 5e-3, batch 64, cosine
to 0 without warmup; stage 'classifier' (10 of the official 320 epochs -> 2 of 60) trains only
the classifier with the class-balanced loss (beta 0.9999, the demo's BCE-on-softmax form), weight
decay 0.1 and MaxNorm (thresh 0.1, projected after each epoch), lr 0.01 cosine, on the same
shuffled long-tailed stream, the rest of the network frozen with BatchNorm in train mode.

Arguments: ir (imbalance ratio, default 10), epochs (default 60; every stage is rescaled).
"""

from ltx import config_lib
from ltx.methods import weight_balancing


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.model.head = "linear"
    config_lib.sgd_recipe(c, lr=0.01, batch_size=64, weight_decay=5e-3, schedule="cosine",
                          nesterov=False)
    c.method = weight_balancing.method_config()
    c = weight_balancing.set_stages(c, epochs=2)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
