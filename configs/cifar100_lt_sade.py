r"""SADE on CIFAR-100-LT: three diverse experts, the standard 200-epoch setup.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz   # once, offline
    python -m ltx.train --config=configs/cifar100_lt_sade.py:ir=100 \
        --workdir=/tmp/ltx/c100_sade_ir100

Official recipe (Vanint/SADE-AgnosticLT; docs/methods/sade.md): ResNet-32 sharing the stem and
stage 1, reduced expert widths 24/48, cosine heads x 30, the summed diverse-expert loss with
tau 2; SGD lr 0.1, Nesterov, weight decay 5e-4, batch 128, warmup 5 then x0.1 at 160 and 180;
crop + flip + rotation 15. The prediction is the plain mean of the expert logits (SADE's
test-time aggregation is not implemented). The official code selects the best test epoch.

Reported (SADE under its earlier name TADE, as quoted by the BalPoE paper, Table 3, row "TADE
(Zhang et al., 2021)"): 49.8 top-1 at ratio 100 on the uniform test set (many 65.4, medium 49.3,
few 29.3); 53.9 at ratio 50 and 63.6 at ratio 10 (BalPoE paper, Table 1, same row).

Arguments: ir (imbalance ratio, default 100), epochs (default 200).
"""

import ml_collections

from ltx import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=100.0, epochs=200)
    c = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=args["ir"],
                                   mixup_alpha=0.0)
    c.method = ml_collections.ConfigDict(dict(name="sade", num_experts=3, tau=2.0))
    c.model.widths = (16, 24, 48)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 200-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
