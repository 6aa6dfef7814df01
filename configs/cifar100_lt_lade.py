r"""LADE on CIFAR-100-LT, the official recipe (ResNet-32, linear head, 200 epochs).

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_lade.py:ir=100 \
        --workdir=/tmp/ltx/c100_lade_ir100

Official recipe (hyperconnect/LADE `config/CIFAR100_LT/lade.yaml` with the README command
`--cifar_imb_ratio 0.01 --remine_lambda 0.01 --alpha 0.1`; docs/methods/lade.md): PriorCE + 0.1 x
the LADE regulariser with remine_lambda 0.01 (the yaml's 0.1 is overridden); SGD lr 0.2
(`main.py`'s --lr default) on trunk and classifier, momentum 0.9, no Nesterov, weight decay 5e-4,
batch 256 (the last partial batch of each epoch dropped); 5 warmup epochs, then x0.01 at the 120th
and 160th epoch (0-indexed 119 and 159: the official scheduler steps at the start of each epoch);
crop (pad 4) + flip, no rotation, no Mixup. The official CIFAR trunk is a 128-d variant of
ResNet-32 (see the docs); this is ltx's ResNet-32. The last epoch is reported, as the official
CIFAR evaluation does.

Reported (second-hand: the BalPoE paper's Table 1, row "LADE (Hong et al., 2021)"): 45.4 top-1
at ratio 100, 50.5 at 50, 61.7 at 10; its Table 3 gives 45.6 at ratio 100 (many 58.7, medium
45.8, few 29.8).

Arguments: ir (imbalance ratio, default 100), alpha, remine_lambda, epochs (default 200; rescales
the schedule).
"""

from ltx import config_lib
from ltx.methods import lade


def get_config(arg=None):
    alpha, remine_lambda = lade.OFFICIAL_DEFAULTS["cifar100_lt"]
    args = config_lib.parse_arg(arg, ir=100.0, epochs=200, alpha=alpha,
                                remine_lambda=remine_lambda)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0, rotation=0.0)
    c.model.head = "linear"
    c.data.last_batch = "drop"  # `run_networks.train` stops each epoch after floor(N / B) steps.
    config_lib.sgd_recipe(c, lr=0.2, batch_size=256, weight_decay=5e-4, warmup_epochs=5,
                          decay_epochs=(119, 159), decay_factor=0.01, nesterov=False)
    c.method = lade.method_config("cifar100_lt", alpha=args["alpha"],
                                  remine_lambda=args["remine_lambda"])
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
