"""Parameter count and forward FLOPs per image of a model; `python -m ltx.stats --config=...`.

    python -m ltx.stats --config=configs/digits_lt_balpoe.py
    python -m ltx.stats --config=configs/cifar100_lt_balpoe.py --config.model.name=resnet50 --xla

prints one JSON object: `params` (trainable parameters), `gflops` (per image, forward, inference
mode), the parts of the count, and the model and input it describes. Nothing is compiled and no
data is loaded: the parameters come from `jax.eval_shape` of `init`, the FLOPs from one
`jax.eval_shape` of `apply` at batch 1 with every Linen module call intercepted.

FLOPs are counted analytically, as thop counts them, which is what RIDE's and the other
references' tables report ("GFLOPs" there are multiply-accumulates):

- convolution: output elements x (kh * kw * C_in / groups) MACs (+ 1 per output with a bias);
- dense / classifier heads: output elements x F MACs (bias not counted); the cosine and LWS heads
  count their F x C matrix product the same way (thop does not see inside custom modules; their
  normalisations and scales are not counted);
- BatchNorm in inference mode: 2 operations per element (thop's `count_bn`);
- ReLU, max pooling, residual additions: not counted (thop's `zero_ops`); global average pooling
  is not counted either (thop counts ~1 per input element: 0.1 M for ResNet-50, 0.003 %).

With these rules ResNet-50 at 224x224 is 4.11 G (25.56 M parameters) and ResNeXt-50 32x4d 4.26 G,
as the references report. The expert branches are one module lifted over the experts (`nn.vmap` or
`nn.scan`), so each of their layers is counted once and multiplied by the number of experts.

`--xla` also reports `xla_flops`, XLA's `cost_analysis()` of the lowered inference function at
batch 1 (XLA's own convention, about 2 flops per MAC plus element-wise work: 7.95 G for ResNet-50;
it needs a lowering, not a compile).
"""

from __future__ import annotations

import json
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models import heads
from ltx.models.multi_expert import EXPERTS_NAME


def _size(shape) -> int:
    return int(math.prod(shape))


def _shaped_variables(model: nn.Module, image_shape):
    """`model`'s variables as ShapeDtypeStructs, from `jax.eval_shape` of init (no compile)."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    return jax.eval_shape(
        lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False), x)


def count_flops(model: nn.Module, image_shape, variables=None) -> dict[str, int]:
    """thop-style operation counts of one inference forward pass of one image (module docstring).

    Returns {'conv_macs', 'dense_macs', 'bn_ops', 'total'}.
    """
    if variables is None:
        variables = _shaped_variables(model, image_shape)
    num_experts = getattr(model, "num_experts", 1)
    # (kind, count) per module path: `nn.scan` traces its body more than once, so a module's
    # count is recorded, not accumulated (no module here is called twice in one forward pass).
    by_path: dict[tuple[str, ...], tuple[str, int]] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        module = context.module
        if isinstance(module, nn.Conv):
            kernel = _size(module.kernel_size) * args[0].shape[-1] // module.feature_group_count
            per_output = kernel + (1 if module.use_bias else 0)
            by_path[module.scope.path] = ("conv_macs", _size(out.shape) * per_output)
        elif isinstance(module, (nn.Dense, heads.CosineHead, heads.LWSHead)):
            by_path[module.scope.path] = ("dense_macs", _size(out.shape) * args[0].shape[-1])
        elif isinstance(module, nn.BatchNorm):
            by_path[module.scope.path] = ("bn_ops", 2 * _size(out.shape))
        return out

    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    counts = {"conv_macs": 0, "dense_macs": 0, "bn_ops": 0}
    for path, (kind, count) in by_path.items():
        # The expert branches are traced once for all experts (vmap / scan).
        counts[kind] += count * (num_experts if EXPERTS_NAME in path else 1)
    counts["total"] = sum(counts.values())
    return counts


def xla_flops(model: nn.Module, image_shape, variables=None) -> float:
    """XLA's `cost_analysis()` flops of the lowered inference forward pass at batch 1.

    A comparison only. The experts run vmapped here (XLA's cost analysis counts a while loop's
    body once, so a scanned model would count one expert), and XLA counts the vmapped
    convolutions, which become batch-grouped ones, differently from the plain ones: with several
    experts this is not E times a branch.
    """
    if variables is None:
        variables = _shaped_variables(model, image_shape)
    if getattr(model, "expert_strategy", "vmap") != "vmap":
        model = model.clone(expert_strategy="vmap")
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # Older jax: one dict per computation.
        analysis = analysis[0]
    return float(analysis["flops"])


def model_stats(model: nn.Module, image_shape, *, xla: bool = False) -> dict[str, Any]:
    """{'params', 'batch_stats', 'gflops', 'ops', 'conv_macs', 'dense_macs', 'bn_ops'} of `model`
    for images of shape `image_shape` (H, W, C): gflops = ops / 1e9, thop-style counts (MACs) per
    image, forward, inference mode (see the module docstring). With `xla`, also 'xla_gflops'."""
    variables = _shaped_variables(model, image_shape)
    sizes = {collection: sum(_size(leaf.shape) for leaf in jax.tree.leaves(tree))
             for collection, tree in variables.items()}  # params, batch_stats
    flops = count_flops(model, image_shape, variables)
    stats = {"params": sizes.get("params", 0), "batch_stats": sizes.get("batch_stats", 0),
             "gflops": flops["total"] / 1e9, "ops": flops.pop("total"), **flops}
    if xla:
        stats["xla_gflops"] = xla_flops(model, image_shape, variables) / 1e9
    return stats


def num_experts_of(method_config) -> int:
    """`method.num_experts` if the config sets it, else the number of BalPoE `lambdas`."""
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

    from ltx import methods, models, stages
    from ltx.data import datasets

    staged = stages.stage_configs(config)
    if staged:
        config = staged[-1][1]
    num_classes, image_shape = datasets.spec(config.data.name)
    num_experts = num_experts_of(config.method)
    method = methods.build(config.method, np.full(num_classes, 100))
    model = models.build(config.model, num_classes=num_classes, num_experts=num_experts,
                         **method.model_overrides)
    return {"model": config.model.name, "num_experts": num_experts,
            "num_shared_stages": model.num_shared_stages, "num_classes": num_classes,
            "image_shape": list(image_shape), **model_stats(model, image_shape, xla=xla)}


def main(argv):
    from absl import app, logging
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Keep JAX's backend probing out of the output.
    print(json.dumps(config_stats(_CONFIG.value, xla=_XLA.value)))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                              lock_config=True)
    _XLA = flags.DEFINE_bool("xla", False, "Also report XLA's cost_analysis() flops.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
