"""Tests for the ImageNet trunks (ltx.models.resnet_imagenet) and their multi-expert splits.

Parameter counts and full-size shapes use `jax.eval_shape` (tracing only, ResNet-152 included);
compiled forward passes use narrow widths, one block per stage and 32x32 images.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ltx import models
from ltx.models import resnet_imagenet
from ltx.models.multi_expert import EXPERTS_NAME, MultiExpertImageNetResNet
from ltx.models.resnet_imagenet import ARCHITECTURES, Bottleneck, ImageNetBasicBlock, ImageNetStem

fast_compile_jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})

RIDE_WIDTHS = (64, 128, 192, 384)
# A narrow grouped-bottleneck network (inner width int(planes * 16 / 64) * 2 = planes / 2).
TINY = dict(widths=(4, 8, 8, 16), blocks=(1, 1, 1, 1), block="bottleneck", groups=2,
            width_per_group=16, stem_width=8)
TINY_IMAGES = (4, 32, 32, 3)


def key(seed: int = 0) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


def images(seed=0, shape=TINY_IMAGES):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@functools.lru_cache(maxsize=None)
def tiny_variables(shared: int):
    """Jitted init of the tiny 3-expert, 7-class network, shared across tests."""
    model = MultiExpertImageNetResNet(7, num_experts=3, num_shared_stages=shared, **TINY)
    return fast_compile_jit(functools.partial(model.init, train=False))(key(0), images())


def n_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def shaped_init(model, x_shape=(1, 224, 224, 3)):
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init(key(0), x, train=False), x)


# ---------------------------------------------------------------------------------------------
# Analytic parameter counts, from the architecture.


def bottleneck_params(cin, planes, groups=1, width_per_group=64):
    width = int(planes * width_per_group / 64) * groups
    out = 4 * planes
    return cin * width + 9 * width * width // groups + width * out + 2 * (2 * width + out)


def stage_params(cin, planes, blocks, block, stride, groups=1, width_per_group=64):
    total = 0
    out = planes * (4 if block == "bottleneck" else 1)
    for b in range(blocks):
        c_in = cin if b == 0 else out
        if block == "bottleneck":
            total += bottleneck_params(c_in, planes, groups, width_per_group)
        else:
            total += 9 * c_in * planes + 9 * planes * planes + 4 * planes
        if b == 0 and (stride != 1 or c_in != out):
            total += c_in * out + 2 * out  # projection shortcut: conv1x1 + BN
    return total


def trunk_params(name, widths, shared, experts, classes, head="linear"):
    a = ARCHITECTURES[name]
    expansion = 4 if a["block"] == "bottleneck" else 1
    stem = 49 * 3 * 64 + 2 * 64
    stages = []
    cin = 64
    for planes, blocks, stride in zip(widths, a["blocks"], resnet_imagenet.STRIDES):
        stages.append(stage_params(cin, planes, blocks, a["block"], stride, a["groups"],
                                   a["width_per_group"]))
        cin = planes * expansion
    features = widths[-1] * expansion
    head_params = features * classes + (classes if head == "linear" else 0)
    branch = sum(stages[shared:]) + head_params + (stem if shared == 0 else 0)
    trunk = (stem if shared else 0) + sum(stages[:shared])
    return trunk + experts * branch


# torchvision's published counts (1000 classes).
@pytest.mark.parametrize("name, expected", [
    ("resnet10", 5_418_792), ("resnet50", 25_557_032), ("resnet152", 60_192_808),
    ("resnext50_32x4d", 25_028_904)])
def test_single_backbone_parameter_counts(name, expected):
    model = MultiExpertImageNetResNet(1000, **ARCHITECTURES[name])
    count = n_params(shaped_init(model)["params"])
    assert count == expected == trunk_params(name, (64, 128, 256, 512), 2, 1, 1000)
    # Where the trunk/branch boundary lies does not change a one-expert network.
    other = MultiExpertImageNetResNet(1000, num_shared_stages=0, **ARCHITECTURES[name])
    assert n_params(shaped_init(other)["params"]) == expected


@pytest.mark.parametrize("name, widths, shared, experts, head", [
    ("resnet50", RIDE_WIDTHS, 2, 3, "cosine"),  # RIDE / SADE
    ("resnext50_32x4d", RIDE_WIDTHS, 2, 4, "cosine"),
    ("resnet50", (64, 128, 256, 512), 2, 3, "cosine"),  # BalPoE
    ("resnet10", (64, 128, 256, 512), 3, 3, "lws"),  # ACE
    ("resnet10", (64, 128, 256, 512), 0, 2, "linear"),  # independent backbones
])
def test_multi_expert_parameter_counts(name, widths, shared, experts, head):
    model = MultiExpertImageNetResNet(1000, num_experts=experts, num_shared_stages=shared,
                                      widths=widths, head=head, **ARCHITECTURES[name])
    variables = shaped_init(model)
    count = n_params(variables["params"])
    if head != "lws":
        assert count == trunk_params(name, widths, shared, experts, 1000, head)
    one = MultiExpertImageNetResNet(1000, num_shared_stages=shared, widths=widths, head=head,
                                    **ARCHITECTURES[name])
    one_vars = shaped_init(one)
    branch = n_params(one_vars["params"][EXPERTS_NAME])
    assert count == n_params(one_vars["params"]) + (experts - 1) * branch
    for leaf in jax.tree.leaves(variables["params"][EXPERTS_NAME]):
        assert leaf.shape[0] == experts
    assert ("stem" in variables["params"]) == (shared >= 1)
    stages = [f"stage{i}" for i in range(4)]
    assert [s for s in stages if s in variables["params"]] == stages[:shared]
    assert [s for s in stages if s in variables["params"][EXPERTS_NAME]] == stages[shared:]


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("name, shared", [
    *[(name, shared) for name in ("resnet10", "resnet50") for shared in (0, 2, 3, 4)],
    ("resnext50_32x4d", 2), ("resnet152", 2)])
@pytest.mark.slow
def test_output_shapes(name, shared):
    expansion = 4 if ARCHITECTURES[name]["block"] == "bottleneck" else 1
    widths = RIDE_WIDTHS if expansion == 4 else (64, 128, 256, 512)
    model = MultiExpertImageNetResNet(10, num_experts=2, num_shared_stages=shared, widths=widths,
                                      head="cosine", **ARCHITECTURES[name])
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    variables = shaped_init(model, x.shape)
    (logits, features), state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, return_features=True,
                                 mutable=["batch_stats"]), variables, x)
    assert logits.shape == (2, 2, 10) and logits.dtype == jnp.float32
    assert features.shape == (2, 2, widths[-1] * expansion)  # RIDE reduced R50: 1536
    assert jax.tree.map(lambda a: a.shape, state["batch_stats"]) == \
        jax.tree.map(lambda a: a.shape, variables["batch_stats"])


def test_spatial_sizes_at_224():
    """Stem to 56x56 (conv/2 + pool/2), then strides 1, 2, 2, 2: 56, 28, 14, 7."""
    stem = ImageNetStem()
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    v = jax.eval_shape(lambda x: stem.init(key(0), x, train=False), x)
    assert jax.eval_shape(lambda v, x: stem.apply(v, x, train=False), v, x).shape == \
        (1, 56, 56, 64)
    y = jax.ShapeDtypeStruct((1, 56, 56, 64), jnp.float32)
    sizes = []
    for i, planes in enumerate((64, 128, 256, 512)):
        stage = resnet_imagenet.ImageNetStage(planes, 1, resnet_imagenet.STRIDES[i])
        v = jax.eval_shape(lambda y: stage.init(key(0), y, train=False), y)
        y = jax.eval_shape(lambda v, y: stage.apply(v, y, train=False), v, y)
        sizes.append(y.shape)
    assert sizes == [(1, 56, 56, 256), (1, 28, 28, 512), (1, 14, 14, 1024), (1, 7, 7, 2048)]


def test_bottleneck_layout_and_stride_on_the_3x3():
    block = Bottleneck(8, stride=2, groups=4, width_per_group=8)  # inner int(8*8/64)*4 = 4
    x = images(1, (2, 8, 8, 6))
    variables = block.init(key(0), x, train=False)
    p = variables["params"]
    assert p["conv1"]["kernel"].shape == (1, 1, 6, 4)
    assert p["conv2"]["kernel"].shape == (3, 3, 1, 4)  # 4 groups of 1 channel
    assert p["conv3"]["kernel"].shape == (1, 1, 4, 32)
    assert p["shortcut"]["conv"]["kernel"].shape == (1, 1, 6, 32)
    assert all("bias" not in p[c] for c in ("conv1", "conv2", "conv3"))
    _, inter = block.apply(variables, x, train=False, capture_intermediates=True)
    shape = lambda name: inter["intermediates"][name]["__call__"][0].shape  # noqa: E731
    assert shape("conv1") == (2, 8, 8, 4)
    assert shape("conv2") == (2, 4, 4, 4)
    assert shape("shortcut") == (2, 4, 4, 32)
    # No projection when neither the stride nor the width changes.
    same = Bottleneck(8)
    v = same.init(key(0), jnp.zeros((1, 4, 4, 32)), train=False)
    assert "shortcut" not in v["params"]


def test_caffe_bottleneck_strides_on_the_1x1():
    """Caffe layout: a 1x1 convolution with stride 2 reads x[:, ::2, ::2], so the block equals
    the stride-1 block (same weights) on the subsampled input."""
    caffe = Bottleneck(8, stride=2, stride_on_1x1=True)
    x = images(3, (2, 8, 8, 6))
    variables = caffe.init(key(0), x, train=False)
    _, inter = caffe.apply(variables, x, train=False, capture_intermediates=True)
    assert inter["intermediates"]["conv1"]["__call__"][0].shape == (2, 4, 4, 8)
    subsampled = Bottleneck(8, stride=1).apply(variables, x[:, ::2, ::2], train=False)
    np.testing.assert_allclose(caffe.apply(variables, x, train=False), subsampled, rtol=1e-5,
                               atol=1e-5)
    standard = Bottleneck(8, stride=2).apply(variables, x, train=False)
    assert not np.allclose(standard, caffe.apply(variables, x, train=False))
    model = models.build(ml_collections.ConfigDict(dict(
        name="resnet50", num_shared_stages=2, head="linear", cosine_scale=30.0,
        expert_strategy="vmap", widths=(8, 8, 8, 8), stride_on_1x1=True)), num_classes=5,
        num_experts=1)
    assert model.stride_on_1x1


def test_zero_init_residual_gives_relu_of_the_shortcut():
    x = jnp.abs(images(2, (2, 8, 8, 16)))
    for block, last in ((Bottleneck(4, zero_init_residual=True), "bn3"),
                        (ImageNetBasicBlock(16, zero_init_residual=True), "bn2")):
        variables = block.init(key(0), x, train=False)
        assert not np.any(np.asarray(variables["params"][last]["scale"]))
        out = block.apply(variables, x, train=False)
        np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-6)  # identity path
    default = Bottleneck(4).init(key(0), x, train=False)
    np.testing.assert_array_equal(default["params"]["bn3"]["scale"], np.ones(16))


def test_initialisation():
    block = Bottleneck(64)
    variables = block.init(key(0), jnp.zeros((1, 4, 4, 256)), train=False)
    kernel = np.asarray(variables["params"]["conv2"]["kernel"])
    # kaiming normal, fan_out = 3 * 3 * out_channels (RIDE's normal_(0, sqrt(2 / n))).
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * 64)), rtol=0.03)
    assert np.mean(np.abs(kernel) > 2 * np.sqrt(2.0 / 576)) > 0.03  # untruncated
    kernel1 = np.asarray(variables["params"]["conv1"]["kernel"])  # fan_out 64, not fan_in 256
    np.testing.assert_allclose(kernel1.std(), np.sqrt(2.0 / 64), rtol=0.03)
    np.testing.assert_array_equal(variables["params"]["bn1"]["scale"], np.ones(64))
    np.testing.assert_array_equal(variables["params"]["bn1"]["bias"], np.zeros(64))
    # The linear head keeps PyTorch's nn.Linear default: U(-1/sqrt(F), 1/sqrt(F)).
    head = tiny_variables(2)["params"][EXPERTS_NAME]["head"]["dense"]
    bound = 1 / np.sqrt(64)
    for leaf in (head["kernel"], head["bias"]):
        leaf = np.asarray(leaf)
        assert np.all(np.abs(leaf) <= bound) and np.abs(leaf).max() > 0.8 * bound


# ---------------------------------------------------------------------------------------------
# Compiled forward passes on the tiny network


@pytest.mark.parametrize("shared, stop", [(2, ()), (0, ()), (3, (1,))])
def test_vmap_and_scan_agree(shared, stop):
    kwargs = dict(num_experts=3, num_shared_stages=shared, stop_gradient_experts=stop, **TINY)
    vmap_model = MultiExpertImageNetResNet(7, expert_strategy="vmap", **kwargs)
    scan_model = MultiExpertImageNetResNet(7, expert_strategy="scan", scan_unroll=3, **kwargs)
    variables = tiny_variables(shared)
    x = images()

    def run(model):
        return fast_compile_jit(functools.partial(
            model.apply, train=True, return_features=True, mutable=["batch_stats"]))(variables, x)

    (lv, fv), sv = run(vmap_model)
    (ls, fs), ss = run(scan_model)
    np.testing.assert_allclose(ls, lv, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fs, fv, atol=1e-4, rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), sv, ss)
    assert lv.shape == (3, 4, 7) and fv.shape == (3, 4, 64)
    assert np.all(np.isfinite(np.asarray(lv)))


def test_experts_have_own_batch_stats():
    model = MultiExpertImageNetResNet(7, num_experts=3, num_shared_stages=2,
                                      expert_strategy="scan", scan_unroll=3, **TINY)
    variables = tiny_variables(2)
    _, state = fast_compile_jit(functools.partial(model.apply, train=True,
                                                  mutable=["batch_stats"]))(variables, images())
    stats = state["batch_stats"]
    assert stats["stem"]["bn"]["mean"].shape == (8,)
    assert stats["stage1"]["block0"]["bn1"]["mean"].shape == (4,)
    for stage in ("stage2", "stage3"):
        mean = np.asarray(stats[EXPERTS_NAME][stage]["block0"]["bn3"]["mean"])
        assert mean.shape[0] == 3
        assert not np.allclose(mean[0], mean[1]) and not np.allclose(mean[1], mean[2])


# ---------------------------------------------------------------------------------------------
# Validation and build


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_shared_stages=5), r"num_shared_stages=5.*0\.\.4"),
    (dict(widths=(64, 128, 256)), r"widths \(64, 128, 256\).*4 stages"),
    (dict(blocks=(3, 4, 0, 3)), r"blocks \(3, 4, 0, 3\)"),
    (dict(block="dense"), r"'dense'.*basic.*bottleneck"),
    (dict(groups=0), r"groups=0"),
    (dict(block="basic", groups=32, width_per_group=4), r"basic.*groups=32"),
    (dict(head="tau"), r"'tau'"),
    (dict(expert_strategy="loop"), r"'loop'"),
    (dict(num_experts=2, num_shared_stages=0, stop_gradient_experts=(1,)),
     r"num_shared_stages=0"),
])
def test_bad_attributes_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiExpertImageNetResNet(10, **kwargs)


def _model_config(name, **overrides):
    c = ml_collections.ConfigDict(dict(name=name, num_shared_stages=2, head="cosine",
                                       cosine_scale=30.0, expert_strategy="vmap"))
    c.update(overrides)
    return c


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_build_dispatches_on_the_name(name):
    model = models.build(_model_config(name, widths=RIDE_WIDTHS), num_classes=1000,
                         num_experts=3)
    assert isinstance(model, MultiExpertImageNetResNet)
    assert model.widths == RIDE_WIDTHS and model.num_experts == 3 and model.scan_unroll == 0
    assert (model.block, model.blocks, model.groups, model.width_per_group) == tuple(
        ARCHITECTURES[name][k] for k in ("block", "blocks", "groups", "width_per_group"))
    # Without widths in the config: the standard (64, 128, 256, 512).
    default = models.build(_model_config(name), num_classes=10, num_experts=1)
    assert default.widths == (64, 128, 256, 512) and not default.zero_init_residual


def test_build_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"'resnet18'.*resnet32.*resnext50_32x4d"):
        models.build(_model_config("resnet18"), num_classes=10, num_experts=1)
