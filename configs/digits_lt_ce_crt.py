r"""Cross-entropy, then cRT (classifier re-training, Kang et al. ICLR 2020) on digits-LT.

    python -m ltx.train --config=configs/digits_lt_ce_crt.py --workdir=/tmp/ltx/digits_ce_crt
    # cRT alone, from a finished run of configs/digits_lt_ce.py trained with the same ir:
    python -m ltx.train --config=configs/digits_lt_ce_crt.py:base=/tmp/ltx/digits_ce \
        --workdir=/tmp/ltx/digits_crt_from_ce

Stage 'joint' is configs/digits_lt_ce.py (ResNet-32, cosine head x 30, CE, 60 epochs). Stage
'crt' starts from its checkpoint with the head re-initialised and trains only the head on the
frozen trunk (BatchNorm in train mode, as the official code): the official ImageNet-LT cRT
recipe (`cls_crt.yaml`: 10 epochs, SGD lr 0.2 for batch 512, momentum 0.9, weight decay 5e-4,
cosine to 0) at digits' batch 64 (lr 0.025), class-balanced sampling, floor(N / B) steps an
epoch. docs/methods/decoupled.md. `epochs=N` moves both stages with the joint run's 60 epochs
(cRT keeps 1/6 of it); with `base=` it is cRT's own length. Arguments: ir, epochs, base.
"""

from ltx import config_lib
from ltx.methods import balpoe
from ltx.methods.decoupled import config as decoupled

KIND = "crt"


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=0, base="")
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.method = balpoe.ce_method_config()
    recipe = dict(recipe=decoupled.OFFICIAL_RECIPES["imagenet_lt"][KIND], batch_size=c.batch_size)
    if args["base"]:
        c = decoupled.from_workdir(c, KIND, args["base"], **recipe)
    else:
        c = decoupled.add_stage(c, KIND, **recipe)
    c = config_lib.scale_epochs(c, args["epochs"] or c.num_epochs)
    c = config_lib.shrink(c) if args["tiny"] else c
    return decoupled.check_base_workdir(c) if args["base"] else c
