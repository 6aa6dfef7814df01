r"""Your own long-tailed dataset: a folder-per-class tree or list files, any number of classes.

    ltx-prepare folders /data/my_set          # writes train.txt, test.txt (val.txt), classes.txt
    python -m ltx.train --config=configs/custom_lt.py:root=/data/my_set,method=balpoe \
        --workdir=/tmp/ltx/my_set_balpoe
    ltx-eval --workdir=/tmp/ltx/my_set_balpoe

The tree is `<root>/train/<class>/<image>` and `<root>/test/<class>/<image>`, optionally
`<root>/val/<class>/<image>`; list files written by hand work the same way (lines
"relative/path label", paths relative to `root`; `--config.data.list_dir` if they live elsewhere,
`--config.data.num_classes` if there is no classes.txt). Class counts, the many/medium/few groups
and the training prior come from the training list. `ir=N` (> 1) trains on the long-tailed subset
that CIFAR-LT takes of CIFAR (the smallest class's count for the head, exponential profile,
seed 0): the way to make a long-tailed benchmark out of a balanced set.

Reported: nothing; no paper has your data, and none fixes a recipe for an arbitrary dataset, so
this is a generic one
(`ltx.config_lib.custom_config`): SGD lr 0.1 for batch 128, cosine after 5 warm-up epochs,
random resized crops + flips, 32x32 crops on `arch=resnet32`, 224 on the ImageNet trunks.

Arguments: root, method (balpoe | ce | la), arch (resnet32 | resnet10 | resnet50 | resnet152 |
resnext50_32x4d), epochs (100), ir (1), crop (default 32 / 224), mixup (0).
"""

from ltx import config_lib
from ltx.methods import balpoe

METHODS = {"balpoe": lambda: balpoe.method_config((1.0, 0.0, -1.0)),
           "ce": balpoe.ce_method_config, "la": balpoe.la_method_config}


def get_config(arg=None):
    args = config_lib.parse_arg(arg, root="", method="balpoe", arch="resnet32", epochs=100,
                                ir=1.0, crop=0, mixup=0.0)
    if args["method"] not in METHODS:
        raise ValueError(f"config argument method={args['method']!r}; expected one of "
                         f"{sorted(METHODS)}")
    # The generic recipe is written for any length (custom_config), so no rescaling.
    c = config_lib.custom_config(root=args["root"], arch=args["arch"], num_epochs=args["epochs"],
                                 imbalance_ratio=args["ir"], crop_size=args["crop"] or None,
                                 mixup_alpha=args["mixup"])
    c.method = METHODS[args["method"]]()
    return config_lib.shrink(c) if args["tiny"] else c
