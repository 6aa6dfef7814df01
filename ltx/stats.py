"""Parameter count and forward FLOPs per image of a model; `ltx-stats --config=...`.

    ltx-stats --config=configs/digits_lt_balpoe.py
    ltx-stats --config=configs/cifar100_lt_balpoe.py --config.model.name=resnet50 --xla
    ltx-stats --workdir=runs/digits_lt_cbe     # a finished run's final predictor
    python -m ltx.cli stats --config=...      # the same, without the console scripts

prints one JSON object: `params` (trainable parameters), `gflops` (per image, forward, inference
mode), the parts of the count, and the model and input it describes. Nothing is compiled and no
data is loaded: the parameters come from `jax.eval_shape` of `init`, the FLOPs from one
`jax.eval_shape` of `apply` at batch 1 with every Linen module call intercepted.

FLOPs are counted analytically, as thop counts them (multiply-accumulates; the rules are in
`ltx.models.flops`): ResNet-50 at 224x224 is 4.11 G (25.56 M parameters), as the references
report.

`--xla` also reports `xla_flops`, XLA's `cost_analysis()` of the lowered inference function at
batch 1 (XLA's own convention, about 2 flops per MAC plus element-wise work: 7.95 G for ResNet-50;
it needs a lowering, not a compile).
"""

from __future__ import annotations

from typing import Any

from ltx.models.flops import model_stats


def num_experts_of(method_config) -> int:
    """`method.num_experts` if the config sets it, else the number of its experts' `lambdas`
    (methods configured by their experts' logit-adjustment lambdas)."""
    if "num_experts" in method_config:
        return int(method_config.num_experts)
    if "lambdas" in method_config:
        return len(method_config.lambdas)
    raise ValueError(f"config.method (name {method_config.get('name')!r}) sets neither "
                     f"num_experts nor lambdas; cannot tell the number of experts")


def config_stats(config, *, xla: bool = False) -> dict[str, Any]:
    """`model_stats` of the model `config` describes, for its dataset's image shape.

    For a multi-stage config (`ltx.stages`) this is the model of the last stage. The method's
    model additions (a router, ...) are included; they are built from uniform class counts, since
    no data is read.
    """
    import numpy as np

    from ltx import config_lib, parts
    from ltx.data import datasets

    staged = config_lib.stage_configs(config)
    if staged:
        config = staged[-1][1]
    num_classes, image_shape = datasets.spec(config.data)
    method, model = parts.build_method_and_model(config, np.full(num_classes, 100))
    return {"model": config.model.name, "num_experts": method.num_experts,
            "num_shared_stages": model.num_shared_stages, "num_classes": num_classes,
            "image_shape": list(image_shape), **model_stats(model, image_shape, xla=xla)}


def workdir_stats(workdir: str, *, xla: bool = False) -> dict[str, Any]:
    """Parameters and FLOPs of a finished workdir's final predictor (`ltx.workdirs`): one model,
    or the sum over the models it runs (the fused class-balanced experts), with each model's
    numbers under 'models'. For a router that skips experts these are the numbers of all
    experts; the experts actually used per image are in its evaluation report."""
    from ltx import workdirs

    predictor = workdirs.final_predictor(workdir)
    image_shape = tuple(predictor.dataset.image_shape)
    parts = {name: model_stats(model, image_shape, xla=xla) for name, model in predictor.models}
    total = {key: sum(p[key] for p in parts.values())
             for key in next(iter(parts.values())) if key != "xla_gflops" or xla}
    return {"method": predictor.method.name, "num_experts": predictor.method.num_experts,
            "num_classes": predictor.dataset.num_classes, "image_shape": list(image_shape),
            **total, "models": parts}
