r"""Cross-entropy, then the nearest-class-mean classifier (NCM, Kang et al. ICLR 2020) on
digits-LT.

    python -m ltx.train --config=configs/digits_lt_ce_ncm.py --workdir=/tmp/ltx/digits_ce_ncm

Stage 'joint' is configs/digits_lt_ce.py (ResNet-32, cosine head x 30, CE, 60 epochs). The
finish step 'ncm' trains nothing: it computes the mean feature of every class over the training
images (evaluation transform, BatchNorm in inference mode) and predicts the nearest one, with the
official defaults: features centred on the training mean and L2-normalised ('cl2n'), squared
Euclidean distance ('l2'). docs/methods/decoupled.md. Arguments: ir, epochs (the joint run's),
features ('cl2n' | 'l2n' | 'un'), distance ('l2' | 'cos').
"""

from ltx import config_lib
from ltx.methods import balpoe
from ltx.methods.decoupled import config as decoupled


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60, features="cl2n", distance="l2")
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.method = balpoe.ce_method_config()
    c = decoupled.add_stage(c, "ncm", ncm_features=args["features"],
                            ncm_distance=args["distance"])
    c = config_lib.scale_epochs(c, args["epochs"])
    return config_lib.shrink(c) if args["tiny"] else c
