"""ResNet trunks with shared stages and per-expert branches.

`build(config.model, num_classes=..., num_experts=...)` gives the Linen module the trainer uses;
its `__call__(x [B, H, W, C], train=..., mask=None)` returns expert logits [E, B, num_classes]
(mask: bool [B], the real rows of a padded batch, which alone make the BatchNorm statistics).

`config.model.name`: 'resnet32' (CIFAR; `widths`, `blocks_per_stage` and `strides` from the
config) or one of the ImageNet trunks 'resnet10', 'resnet50', 'resnet152', 'resnext50_32x4d'
(block kind and counts from the name; `widths` = the 4 stage plane counts, default
(64, 128, 256, 512); optional `zero_init_residual`). All take `num_shared_stages`, `head`,
`cosine_scale`, `expert_strategy` and `bn_running_var` ('unbiased', PyTorch's BatchNorm update,
the default; 'biased', flax's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ltx.models.heads import HEAD_KINDS, CosineHead, LinearHead, LWSHead, make_head  # noqa: F401
from ltx.models import resnet_imagenet
from ltx.models.multi_expert import MultiExpertImageNetResNet, MultiExpertNet, MultiExpertResNet

IMAGENET_ARCHITECTURES = tuple(resnet_imagenet.ARCHITECTURES)
ARCHITECTURES = ("resnet32", *IMAGENET_ARCHITECTURES)
IMAGENET_WIDTHS = (64, 128, 256, 512)
EXPERT_STRATEGIES = ("auto", "vmap", "scan")
BN_RUNNING_VARS = ("unbiased", "biased")
# config.model.dtype -> the trunk's computation dtype (mixed precision with float32 parameters).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def resolve_expert_strategy(strategy: str) -> str:
    """'auto' -> 'scan' on CPU, else 'vmap'.

    On XLA:CPU the vmapped expert convolutions become grouped convolutions, which run ~8x slower
    than the same convolutions one expert after another (ResNet-32, 3 experts, 32x32, batch 128 on
    2 cores: 6.7 vs 56.6 images/s; `experiments/benchmark_train_step.py`).
    """
    if strategy not in EXPERT_STRATEGIES:
        raise ValueError(f"model.expert_strategy={strategy!r}; expected one of "
                         f"{EXPERT_STRATEGIES}")
    if strategy == "auto":
        return "scan" if jax.default_backend() == "cpu" else "vmap"
    return strategy


def build(model_config, *, num_classes: int, num_experts: int) -> MultiExpertNet:
    """The multi-expert trunk described by `config.model`.

    A method's additions (a router, a frozen trunk, stop-gradient experts, its head) are applied
    by the method on top of this (`ltx.methods.Method.wrap_model`).
    """
    cfg = model_config
    if cfg.name not in ARCHITECTURES:
        raise ValueError(f"model.name={cfg.name!r}; expected one of {ARCHITECTURES}")
    running_var = cfg.get("bn_running_var", "unbiased")
    if running_var not in BN_RUNNING_VARS:
        raise ValueError(f"model.bn_running_var={running_var!r}; expected one of "
                         f"{BN_RUNNING_VARS}")
    dtype = cfg.get("dtype", "float32")
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"model.dtype={dtype!r}; expected one of {tuple(COMPUTE_DTYPES)}")
    common = dict(
        dtype=COMPUTE_DTYPES[dtype],
        num_classes=num_classes,
        num_experts=num_experts,
        num_shared_stages=cfg.num_shared_stages,
        head=cfg.head,
        cosine_scale=cfg.cosine_scale,
        expert_strategy=resolve_expert_strategy(cfg.expert_strategy),
        bn_unbiased=running_var == "unbiased",
    )
    if cfg.name == "resnet32":
        return MultiExpertResNet(widths=tuple(cfg.widths), blocks_per_stage=cfg.blocks_per_stage,
                                 strides=tuple(cfg.strides), **common)
    return MultiExpertImageNetResNet(
        widths=tuple(cfg.get("widths", IMAGENET_WIDTHS)),
        zero_init_residual=cfg.get("zero_init_residual", False),
        stride_on_1x1=cfg.get("stride_on_1x1", False),
        **resnet_imagenet.ARCHITECTURES[cfg.name], **common)


__all__ = ["CosineHead", "LWSHead", "LinearHead", "MultiExpertImageNetResNet", "MultiExpertNet",
           "MultiExpertResNet", "build", "make_head", "resolve_expert_strategy"]
