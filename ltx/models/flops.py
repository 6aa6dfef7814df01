"""Parameter count and forward FLOPs per image of a Linen model, counted without compiling.

The parameters come from `jax.eval_shape` of `init`, the FLOPs from one `jax.eval_shape` of
`apply` at batch 1 with every Linen module call intercepted. FLOPs are counted analytically, as
thop counts them, which is what RIDE's and the other references' tables report ("GFLOPs" there
are multiply-accumulates):

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
`xla_flops` is XLA's own `cost_analysis()` of the lowered function (about 2 flops per MAC plus
element-wise work: 7.95 G for ResNet-50; it needs a lowering, not a compile).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models import heads
from ltx.models.batch_norm import BatchNorm
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
        elif isinstance(module, (nn.BatchNorm, BatchNorm)):
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
