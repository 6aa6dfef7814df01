"""Multi-expert ResNets: a shared trunk and per-expert branches, as RIDE / SADE / BalPoE / ACE.

`MultiExpertResNet` is the CIFAR ResNet (`ltx.models.resnet_cifar`), `MultiExpertImageNetResNet`
the ImageNet ResNet / ResNeXt (`ltx.models.resnet_imagenet`); both are `MultiExpertNet`s, which
hold the trunk/branch split and the lifting and take the stem and stages from their subclass.

Layout (official RIDE `model/ldam_drw_resnets/ride_resnet_cifar.py` and `model/fb_resnets/`,
reused by SADE and BalPoE; ACE shares one more stage):

- shared trunk: stem + the first `num_shared_stages` stages. CIFAR: RIDE/SADE/BalPoE share the
  stem and stage 1 (1), ACE stages 1-2 (2). ImageNet: RIDE/SADE/BalPoE share through layer2 (2),
  ACE through layer3 (3). `num_shared_stages=0` gives fully independent backbones, each expert
  with its own stem (BalPoE's deep-ensemble variant).
- expert branch: the remaining stages, global average pooling and a classifier head, each expert
  with its own weights and its own BatchNorm statistics. RIDE and SADE reduce the expert widths
  (CIFAR `widths=(16, 24, 48)`, ImageNet `(64, 128, 192, 384)`: 1536-d bottleneck features);
  BalPoE keeps the full widths.
- with one expert this is exactly the single backbone (LDAM-DRW ResNet-32, torchvision-layout
  ResNet-50, ...) wherever the split lies.

The branch is one Linen module (`ExpertBranch`) lifted over the experts, so every variable of the
branch has a leading expert axis E, under the submodule name 'experts', whichever strategy runs it:

- 'vmap': `nn.vmap`; the experts run batched. Best on GPU/TPU. On XLA:CPU the vmapped convolutions
  become grouped convolutions, which are slow.
- 'scan': `nn.scan` with the same variable axes and rng splitting; the experts run one after another
  as ordinary convolutions. Best on CPU, but only unrolled (`scan_unroll=0`, the default):
  XLA:CPU runs the convolutions of a rolled while loop ~18x slower (ResNet-32 at 32x32, batch
  128, one expert: 5.3 vs 94 images/s).

Both strategies give the same variable trees, so checkpoints and optimizer states move between them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.models import resnet_imagenet
from ltx.models.heads import HEAD_KINDS, make_head
from ltx.models.resnet_cifar import ResNetStage, Stem

EXPERT_STRATEGIES = ("vmap", "scan")
EXPERTS_NAME = "experts"  # name of the lifted branch in the variable trees

_VARIABLE_AXES = {"params": 0, "batch_stats": 0}
_SPLIT_RNGS = {"params": True, "dropout": True}


class ExpertBranch(nn.Module):
    """One expert: [optional stem] -> stages -> global average pool -> head.

    `__call__(carry, x, mask)` has the `nn.scan` signature and returns
    `(carry, (logits, features))`: x [B, H, W, C] (the shared features, or the image when `stem`
    is given), mask bool [B] or None (the real rows of a padded batch, for BatchNorm), logits
    [B, num_classes] float32, features [B, F] float32 with F the channels of the last stage (or C
    with no stages). The carry is passed through untouched (None under both strategies).

    `stem` (or None) and `stages` are module constructors (e.g. `functools.partial` of a stage
    class with all its attributes but `name`), called as `factory(name=...)` and applied as
    `module(x, train=..., mask=...)`. `first_stage` is the index of the first stage of the branch
    in the whole network; it only names the submodules ('stage{i}') so that they read the same as in a
    single backbone.
    """

    num_classes: int
    stages: tuple = ()
    first_stage: int = 0
    stem: Any = None
    head: str = "linear"
    cosine_scale: float = 30.0
    linear_init: str = "kaiming"
    train: bool = False

    @nn.compact
    def __call__(self, carry, x: jax.Array, mask: jax.Array | None = None):
        if self.stem is not None:
            x = self.stem(name="stem")(x, train=self.train, mask=mask)
        for i, stage in enumerate(self.stages):
            x = stage(name=f"stage{self.first_stage + i}")(x, train=self.train, mask=mask)
        features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        logits = make_head(self.head, self.num_classes, scale=self.cosine_scale,
                           linear_init=self.linear_init, name="head")(features)
        return carry, (logits, features)


class MultiExpertNet(nn.Module):
    """A stem and stages, the first `num_shared_stages` shared, the rest per expert.

    Subclasses say what the stem and the stages are: `_num_stages()`, `_stem()` and `_stage(i)`
    (module constructors as `ExpertBranch` takes them), and check their own attributes in
    `_validate_architecture()`. `_linear_init` is the 'linear' head's kernel init.

    Attributes:
      num_classes: C.
      num_experts: E >= 1. E == 1 still has the leading expert axis on the branch variables.
      num_shared_stages: stages in the shared trunk, 0..number of stages. The stem is shared iff
        >= 1; 0 gives each expert its own stem (independent backbones).
      head: 'linear', 'cosine' or 'lws' (see `ltx.models.heads`).
      cosine_scale: the cosine head's scale.
      expert_strategy: 'vmap' or 'scan' (see the module docstring).
      scan_unroll: `unroll` of the scan; 0 (default) unrolls it fully, 1 is a rolled loop.
      stop_gradient_experts: experts whose input is `stop_gradient` of the shared features, so
        their loss does not train the trunk (ACE: only the all-class expert updates it). Needs a
        shared trunk (num_shared_stages >= 1).
      dtype: computation dtype of the convolutions and BatchNorm; params, logits and features are
        float32.
      bn_unbiased: BatchNorm folds the unbiased batch variance into its running variance, as
        PyTorch (`ltx.models.batch_norm`); False: flax's biased update.

    `__call__(x, *, train, mask=None, return_features=False, return_shared=False)`:
    x [B, H, W, C_in] (mask: bool [B], the real rows of a padded batch, which alone make the
    BatchNorm statistics in train mode) ->
    logits [E, B, C] float32; with `return_features` also the experts' pooled features [E, B, F]
    float32, as `(logits, features)`; with `return_shared` also the shared trunk's feature map
    [B, H', W', F'] (the input itself without a shared trunk), as `(logits, features, shared)`.
    How the experts combine is left to the method, and so are its additions to the model
    (routers, a frozen trunk: `ltx.methods`' model wrappers, which keep these variable names).
    In train mode call `apply` with `mutable=['batch_stats']`.
    """

    num_classes: int
    num_experts: int = 1
    num_shared_stages: int = 1
    head: str = "linear"
    cosine_scale: float = 30.0
    expert_strategy: str = "vmap"
    scan_unroll: int = 0
    stop_gradient_experts: tuple = ()
    dtype: Any = jnp.float32
    bn_unbiased: bool = True

    _linear_init = "kaiming"

    def __post_init__(self):
        super().__post_init__()
        self._validate_architecture()
        self._validate()

    # Subclass hooks.
    def _num_stages(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define _num_stages()")

    def _stem(self) -> Callable[..., nn.Module]:
        raise NotImplementedError(f"{type(self).__name__} must define _stem()")

    def _stage(self, index: int) -> Callable[..., nn.Module]:
        raise NotImplementedError(f"{type(self).__name__} must define _stage(index)")

    def _validate_architecture(self):
        pass

    def _validate(self):
        if not isinstance(self.num_experts, int) or self.num_experts < 1:
            raise ValueError(f"num_experts must be an int >= 1, got {self.num_experts!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {self.num_classes!r}")
        stages = self._num_stages()
        if not 0 <= self.num_shared_stages <= stages:
            raise ValueError(
                f"num_shared_stages={self.num_shared_stages!r} is out of range; expected 0.."
                f"{stages} for {stages} stages")
        if self.expert_strategy not in EXPERT_STRATEGIES:
            raise ValueError(f"unknown expert_strategy {self.expert_strategy!r}; expected one of "
                             f"{EXPERT_STRATEGIES}")
        if self.head not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {self.head!r}; expected one of {HEAD_KINDS}")
        for i in self.stop_gradient_experts:
            if not isinstance(i, int) or not 0 <= i < self.num_experts:
                raise ValueError(
                    f"stop_gradient_experts index {i!r} is out of range; expected expert indices "
                    f"0..{self.num_experts - 1} for num_experts={self.num_experts}")
        if self.stop_gradient_experts and self.num_shared_stages == 0:
            raise ValueError(
                f"stop_gradient_experts={tuple(self.stop_gradient_experts)!r} needs a shared "
                f"trunk, but num_shared_stages=0 gives every expert its own backbone")

    def _branch(self, train: bool, stacked_input: bool) -> nn.Module:
        s = self.num_shared_stages
        kwargs = dict(
            num_classes=self.num_classes,
            stages=tuple(self._stage(i) for i in range(s, self._num_stages())),
            first_stage=s,
            stem=self._stem() if s == 0 else None,
            head=self.head,
            cosine_scale=self.cosine_scale,
            linear_init=self._linear_init,
            train=train,
            name=EXPERTS_NAME,
        )
        x_axis = 0 if stacked_input else None
        # One expert: vmap over an axis of size 1 is plain convolutions, whereas a length-1 scan
        # stays a while loop, which XLA:CPU runs ~18x slower. The variables are the same.
        if self.expert_strategy == "vmap" or self.num_experts == 1:
            lifted = nn.vmap(ExpertBranch, variable_axes=_VARIABLE_AXES, split_rngs=_SPLIT_RNGS,
                             in_axes=(None, x_axis, None), out_axes=0,
                             axis_size=self.num_experts)
        else:
            lifted = nn.scan(ExpertBranch, variable_axes=_VARIABLE_AXES, split_rngs=_SPLIT_RNGS,
                             in_axes=(0 if stacked_input else nn.broadcast, nn.broadcast),
                             out_axes=0,
                             length=self.num_experts,
                             unroll=self.scan_unroll or self.num_experts)
        return lifted(**kwargs)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None,
                 return_features: bool = False, return_shared: bool = False):
        """x [B, H, W, C_in] -> logits [E, B, C] [, features [E, B, F]] [, shared] (the class)."""
        if self.num_shared_stages >= 1:
            x = self._stem()(name="stem")(x, train=train, mask=mask)
            for i in range(self.num_shared_stages):
                x = self._stage(i)(name=f"stage{i}")(x, train=train, mask=mask)
        else:
            x = jnp.asarray(x, self.dtype)
        shared = x

        stacked = bool(self.stop_gradient_experts)
        if stacked:
            stop = set(self.stop_gradient_experts)
            x = jnp.stack([jax.lax.stop_gradient(x) if e in stop else x
                           for e in range(self.num_experts)])
        _, (logits, features) = self._branch(train, stacked)(None, x, mask)
        if return_shared:
            return logits, features, shared
        if return_features:
            return logits, features
        return logits


class MultiExpertResNet(MultiExpertNet):
    """CIFAR ResNet (`ltx.models.resnet_cifar`) with a shared trunk and `num_experts` branches.

    Attributes (besides `MultiExpertNet`'s):
      widths: stage widths; the stem has widths[0] channels. RIDE/SADE: (16, 24, 48).
      blocks_per_stage: BasicBlocks per stage (5 for ResNet-32).
      strides: stride of the first block of each stage.
    """

    widths: tuple = (16, 32, 64)
    blocks_per_stage: int = 5
    strides: tuple = (1, 2, 2)

    def _validate_architecture(self):
        if len(self.widths) == 0:
            raise ValueError(f"widths must name at least one stage, got {self.widths!r}")
        if len(self.strides) != len(self.widths):
            raise ValueError(
                f"strides {tuple(self.strides)!r} has {len(self.strides)} entries but widths "
                f"{tuple(self.widths)!r} has {len(self.widths)}; expected one stride per stage")
        if self.blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {self.blocks_per_stage!r}")

    def _num_stages(self) -> int:
        return len(self.widths)

    def _stem(self):
        return functools.partial(Stem, self.widths[0], dtype=self.dtype,
                                 bn_unbiased=self.bn_unbiased)

    def _stage(self, index: int):
        return functools.partial(ResNetStage, self.widths[index], self.blocks_per_stage,
                                 self.strides[index], dtype=self.dtype,
                                 bn_unbiased=self.bn_unbiased)


class MultiExpertImageNetResNet(MultiExpertNet):
    """ImageNet ResNet / ResNeXt (`ltx.models.resnet_imagenet`) with shared stages and experts.

    Four stages (layer1..layer4, named stage0..stage3) with strides 1, 2, 2, 2 after the
    conv7x7/2 + max-pool stem. `ARCHITECTURES` in `ltx.models.resnet_imagenet` gives `block`,
    `blocks`, `groups` and `width_per_group` for ResNet-10/50/152 and ResNeXt-50 32x4d.

    Attributes (besides `MultiExpertNet`'s; `num_shared_stages` defaults to 2, RIDE's layer2):
      widths: planes of the 4 stages; the output of stage i has widths[i] * expansion channels
        (expansion 4 for 'bottleneck', 1 for 'basic'). RIDE/SADE reduced: (64, 128, 192, 384).
      blocks: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
      block: 'basic' or 'bottleneck'.
      groups, width_per_group: the 3x3 convolution of a bottleneck has
        int(planes * width_per_group / 64) * groups channels in `groups` groups (ResNeXt 32x4d:
        32, 4; ResNet: 1, 64).
      stem_width: channels of the stem (64).
      zero_init_residual: start the last BN gamma of every block at 0 (off in the references).
      stride_on_1x1: Caffe-style bottlenecks, the stride on the first 1x1 convolution
        (`resnet_imagenet.Bottleneck`); for Caffe-converted pretrained weights.

    The 'linear' head is PyTorch's default `nn.Linear` init, as the references'.
    """

    num_shared_stages: int = 2
    widths: tuple = (64, 128, 256, 512)
    blocks: tuple = (3, 4, 6, 3)
    block: str = "bottleneck"
    groups: int = 1
    width_per_group: int = 64
    stem_width: int = resnet_imagenet.STEM_WIDTH
    zero_init_residual: bool = False
    stride_on_1x1: bool = False

    _linear_init = "torch"

    def _validate_architecture(self):
        if len(self.widths) != resnet_imagenet.NUM_STAGES:
            raise ValueError(f"widths {tuple(self.widths)!r} has {len(self.widths)} entries; "
                             f"expected the planes of {resnet_imagenet.NUM_STAGES} stages")
        if len(self.blocks) != resnet_imagenet.NUM_STAGES or any(
                not isinstance(b, int) or b < 1 for b in self.blocks):
            raise ValueError(f"blocks {tuple(self.blocks)!r}; expected {resnet_imagenet.NUM_STAGES}"
                             f" block counts >= 1")
        if self.block not in resnet_imagenet.BLOCK_KINDS:
            raise ValueError(f"unknown block {self.block!r}; expected one of "
                             f"{resnet_imagenet.BLOCK_KINDS}")
        if self.groups < 1 or self.width_per_group < 1:
            raise ValueError(f"groups={self.groups!r} and width_per_group="
                             f"{self.width_per_group!r} must be >= 1")
        if self.block == "basic" and (self.groups, self.width_per_group) != (1, 64):
            raise ValueError(f"block='basic' supports only groups=1 and width_per_group=64, got "
                             f"groups={self.groups!r}, width_per_group={self.width_per_group!r}")

    def _num_stages(self) -> int:
        return resnet_imagenet.NUM_STAGES

    def _stem(self):
        return functools.partial(resnet_imagenet.ImageNetStem, self.stem_width, dtype=self.dtype,
                                 bn_unbiased=self.bn_unbiased)

    def _stage(self, index: int):
        options = dict(zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                       bn_unbiased=self.bn_unbiased)
        if self.block == "bottleneck":
            options.update(groups=self.groups, width_per_group=self.width_per_group,
                           stride_on_1x1=self.stride_on_1x1)
        block = functools.partial(resnet_imagenet.BLOCKS[self.block], **options)
        return functools.partial(resnet_imagenet.ImageNetStage, self.widths[index],
                                 self.blocks[index], resnet_imagenet.STRIDES[index], block=block)
