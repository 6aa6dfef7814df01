r"""RIDE on digits-LT: 3 reduced-width experts with the RIDE loss, then the expert-assignment
router.

    python -m ltx.train --config=configs/digits_lt_ride.py --workdir=/tmp/ltx/digits_ride
    python -m ltx.train --config=configs/digits_lt_ride.py:distill=1
    --workdir=/tmp/ltx/digits_ride_kd

RIDE's CIFAR recipe (docs/methods/ride.md `ltx.methods.ride`) on the 60-epoch digits-LT schedule:
ResNet-32 sharing the stem and stage 1, experts at widths 24/48, cosine heads x 30; RIDE loss with
lambda -0.45, DRW and per-class temperatures from epoch 48 (160 of 200); SGD 0.1 Nesterov, wd
5e-4, warmup 5, x0.01 at 80% and 90%, crop + rotation. Stage 2 (`router`): 5 epochs of the
frozen experts with the cascade router (top-3 logits of 10 classes, as 30 of 100 on CIFAR),
class-balanced sampling. `distill=1` first trains a 6-expert teacher and distils it into the
3 experts (warmup 6, as CIFAR's 20 of 200). The final metrics are the cascade's, with the average
number of experts per image and its GFLOPs (`avg_experts`, `gflops_per_image`). Arguments: ir,
epochs, experts, distill (0, 1, or 2: from `--config.teacher.workdir`).
"""

from ltx import config_lib
from ltx.methods.ride import config as ride_config


def get_config(arg=None):
    args = config_lib.parse_arg(arg, ir=10.0, epochs=60, experts=3, distill=0)
    c = config_lib.digits_lt_config(imbalance_ratio=args["ir"])
    c.model.widths = (16, 24, 48)
    c.data.augment.rotation = 15.0
    c.method = ride_config.method_config(num_experts=args["experts"], reweight_epoch=48,
                                         router_top_k=3)
    c.schedule.decay_factor = 0.01  # RIDE's CustomLR: x0.01 then x1e-4.
    c = ride_config.set_stages(c, distill=args["distill"], router_batch_size=64,
                               distill_warmup_epochs=6)
    c = config_lib.scale_epochs(c, args["epochs"])  # The 60-epoch recipe moved to `epochs`.
    return config_lib.shrink(c) if args["tiny"] else c
