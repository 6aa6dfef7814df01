"""Tests for ltx.models: CIFAR ResNet blocks, classifier heads and the multi-expert ResNet.

Shapes and parameter counts use `jax.eval_shape` (tracing only); numerical tests use small widths,
one or two blocks per stage and 8x8 images so that the whole file stays fast on two CPU cores.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx.models.heads import HEAD_KINDS, CosineHead, LinearHead, LWSHead, make_head
from ltx.models.multi_expert import EXPERTS_NAME, MultiExpertResNet
from ltx.models.resnet_cifar import BasicBlock, Stem, option_a_shortcut

# A small network with the same structure: widths change by even amounts (option-A padding).
SMALL = dict(widths=(4, 6, 8), blocks_per_stage=1)
SMALL_IMAGES = (4, 8, 8, 3)


# The numerical tests need correct code, not fast code: skip most of XLA's backend optimisation,
# which roughly halves compile times on CPU.
fast_compile_jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def key(seed: int = 0) -> jax.Array:
    """An 'rbg' key: XLA:CPU compiles threefry-based inits several times slower."""
    return jax.random.key(seed, impl="rbg")


@functools.lru_cache(maxsize=None)
def small_variables(shared: int, strategy: str = "vmap", seed: int = 0):
    """Real (jitted) init of the small 3-expert, 7-class network, shared across tests.

    Neither stop_gradient_experts, the head's scale nor dtype changes the variables, so tests
    that vary those reuse these.
    """
    model = MultiExpertResNet(7, num_experts=3, num_shared_stages=shared,
                              expert_strategy=strategy, **SMALL)
    return fast_compile_jit(functools.partial(model.init, train=False))(key(seed), images())


def n_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def shaped_init(model, x_shape=(2, 32, 32, 3)):
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init(key(0), x, train=False), x)


def images(seed=0, shape=SMALL_IMAGES):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Analytic parameter counts, from the architecture.

def conv_params(cin, cout, k=3):
    return k * k * cin * cout


def bn_params(c):
    return 2 * c  # gamma, beta (running mean/var are batch_stats, not params)


def stage_params(cin, width, blocks):
    total = 0
    for b in range(blocks):
        c_in = cin if b == 0 else width
        total += conv_params(c_in, width) + conv_params(width, width) + 2 * bn_params(width)
    return total


def head_params(kind, features, classes):
    return {"linear": features * classes + classes,
            "cosine": features * classes,
            "lws": features * classes + 2 * classes}[kind]


def stem_params(cin, width):
    return conv_params(cin, width) + bn_params(width)


def branch_params(widths, shared, blocks, classes, head="linear", cin=3):
    """Parameters of one expert branch: (stem if shared == 0) + its stages + head."""
    total = stem_params(cin, widths[0]) if shared == 0 else 0
    for i in range(shared, len(widths)):
        total += stage_params(widths[i - 1] if i else widths[0], widths[i], blocks)
    return total + head_params(head, widths[-1], classes)


def model_params(widths, shared, blocks, classes, experts, head="linear", cin=3):
    trunk = 0
    if shared:
        trunk = stem_params(cin, widths[0])
        for i in range(shared):
            trunk += stage_params(widths[i - 1] if i else widths[0], widths[i], blocks)
    return trunk + experts * branch_params(widths, shared, blocks, classes, head, cin)


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("head", HEAD_KINDS)
@pytest.mark.parametrize("shared", [0, 1, 2])
@pytest.mark.parametrize("experts", [1, 3])
def test_output_shapes(experts, shared, head):
    model = MultiExpertResNet(10, num_experts=experts, num_shared_stages=shared, head=head,
                              **SMALL)
    variables = shaped_init(model, SMALL_IMAGES)
    x = jax.ShapeDtypeStruct(SMALL_IMAGES, jnp.float32)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert logits.shape == (experts, 4, 10) and logits.dtype == jnp.float32
    (logits, features), state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, return_features=True,
                                 mutable=["batch_stats"]), variables, x)
    assert logits.shape == (experts, 4, 10)
    assert features.shape == (experts, 4, 8) and features.dtype == jnp.float32
    assert jax.tree.map(lambda a: a.shape, state["batch_stats"]) == \
        jax.tree.map(lambda a: a.shape, variables["batch_stats"])
    # Every branch variable has the leading expert axis, E == 1 included.
    for leaf in jax.tree.leaves(variables["params"][EXPERTS_NAME]):
        assert leaf.shape[0] == experts
    assert ("stem" in variables["params"]) == (shared >= 1)


def test_real_forward_and_bfloat16():
    model = MultiExpertResNet(7, num_experts=3, dtype=jnp.bfloat16, **SMALL)
    variables = small_variables(1)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits, features = fast_compile_jit(functools.partial(model.apply, train=False,
                                                 return_features=True))(variables, images())
    assert logits.shape == (3, 4, 7) and logits.dtype == jnp.float32
    assert features.shape == (3, 4, 8) and features.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))


# ---------------------------------------------------------------------------------------------
# Parameter counts


@pytest.mark.parametrize("classes, expected", [(10, 464_154), (100, 470_004)])
def test_resnet32_parameter_count(classes, expected):
    model = MultiExpertResNet(classes)  # 1 expert, stem + stage 1 shared, 16/32/64, linear head
    count = n_params(shaped_init(model)["params"])
    assert count == model_params((16, 32, 64), 1, 5, classes, 1) == expected
    assert abs(count - 0.46e6) < 0.015e6
    # Where the trunk/branch boundary lies does not change a one-expert network.
    for shared in (0, 2, 3):
        other = MultiExpertResNet(classes, num_shared_stages=shared)
        assert n_params(shaped_init(other)["params"]) == expected


@pytest.mark.parametrize("widths, shared, head", [
    *[(w, s, "linear") for w in [(16, 32, 64), (16, 24, 48)] for s in (0, 1, 2)],
    ((16, 32, 64), 1, "cosine"),  # BalPoE
    ((16, 24, 48), 1, "cosine"),  # RIDE / SADE
    ((16, 32, 64), 2, "lws"),  # ACE
])
def test_multi_expert_parameter_count(widths, shared, head):
    def count(experts):
        model = MultiExpertResNet(100, num_experts=experts, num_shared_stages=shared,
                                  widths=widths, head=head)
        return shaped_init(model)["params"]

    one, three = count(1), count(3)
    branch = n_params(one[EXPERTS_NAME])
    assert branch == branch_params(widths, shared, 5, 100, head)
    assert n_params(three) == n_params(one) + 2 * branch
    assert n_params(three) == model_params(widths, shared, 5, 100, 3, head)


# ---------------------------------------------------------------------------------------------
# vmap vs scan


def _apply_fns(model):
    train = fast_compile_jit(functools.partial(model.apply, train=True, return_features=True,
                                      mutable=["batch_stats"]))
    evaluate = fast_compile_jit(functools.partial(model.apply, train=False, return_features=True))
    return train, evaluate


@pytest.mark.parametrize("shared, stop", [(1, ()), (0, ()), (2, (1,))])
def test_vmap_and_scan_agree(shared, stop):
    kwargs = dict(num_experts=3, num_shared_stages=shared, stop_gradient_experts=stop, **SMALL)
    vmap_model = MultiExpertResNet(7, expert_strategy="vmap", **kwargs)
    scan_model = MultiExpertResNet(7, expert_strategy="scan", scan_unroll=2, **kwargs)
    x = images()
    variables = small_variables(shared)  # initialised by the vmap model

    vmap_train, vmap_eval = _apply_fns(vmap_model)
    scan_train, scan_eval = _apply_fns(scan_model)
    (lv, fv), sv = vmap_train(variables, x)
    (ls, fs), ss = scan_train(variables, x)
    np.testing.assert_allclose(ls, lv, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fs, fv, atol=1e-5, rtol=1e-5)
    assert jax.tree.structure(sv) == jax.tree.structure(ss)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), sv, ss)

    updated = {"params": variables["params"], "batch_stats": sv["batch_stats"]}
    lv, fv = vmap_eval(updated, x)
    ls, fs = scan_eval(updated, x)
    np.testing.assert_allclose(ls, lv, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fs, fv, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("experts", [1, 3])
def test_vmap_and_scan_same_variable_layout(experts):
    def layout(strategy):
        model = MultiExpertResNet(10, num_experts=experts, expert_strategy=strategy)
        variables = shaped_init(model)
        return (jax.tree.structure(variables),
                jax.tree.map(lambda a: (a.shape, a.dtype), variables))

    assert layout("vmap") == layout("scan")


# ---------------------------------------------------------------------------------------------
# Experts are distinct


@pytest.mark.parametrize("strategy", ["vmap", "scan"])
def test_experts_have_own_weights_and_batch_stats(strategy):
    model = MultiExpertResNet(7, num_experts=3, expert_strategy=strategy, **SMALL)
    x = images()
    variables = small_variables(1, strategy)
    expert_params = variables["params"][EXPERTS_NAME]
    for leaf in (expert_params["stage1"]["block0"]["conv1"]["kernel"],
                 expert_params["head"]["dense"]["kernel"]):
        assert not np.allclose(leaf[0], leaf[1])
        assert not np.allclose(leaf[1], leaf[2])

    train = fast_compile_jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    _, state = train(variables, x)
    stats = state["batch_stats"]
    # The shared trunk has one set of statistics, without an expert axis.
    assert stats["stem"]["bn"]["mean"].shape == (4,)
    assert stats["stage0"]["block0"]["bn1"]["mean"].shape == (4,)
    # Each expert has its own, which differ because the experts' weights differ.
    for stage, width in (("stage1", 6), ("stage2", 8)):
        mean = np.asarray(stats[EXPERTS_NAME][stage]["block0"]["bn1"]["mean"])
        var = np.asarray(stats[EXPERTS_NAME][stage]["block0"]["bn1"]["var"])
        assert mean.shape == var.shape == (3, width)
        assert not np.allclose(mean[0], mean[1]) and not np.allclose(mean[1], mean[2])
        assert not np.allclose(var[0], var[1])


# ---------------------------------------------------------------------------------------------
# ResNet blocks


def _numpy_option_a(x, planes, stride):
    x = np.asarray(x)
    if stride != 1:
        x = x[:, ::2, ::2, :]
    pad = (planes - x.shape[-1]) // 2
    zeros = np.zeros(x.shape[:-1] + (pad,), x.dtype)
    return np.concatenate([zeros, x, zeros], axis=-1)


@pytest.mark.parametrize("cin, planes, stride", [(16, 32, 2), (32, 64, 2), (16, 24, 2),
                                                 (24, 48, 2), (16, 24, 1), (16, 16, 2)])
def test_option_a_shortcut_matches_numpy(cin, planes, stride):
    x = np.random.default_rng(0).normal(size=(2, 8, 8, cin)).astype(np.float32)
    out = option_a_shortcut(jnp.asarray(x), planes, stride)
    expected = _numpy_option_a(x, planes, stride)
    assert out.shape == expected.shape == (2, 8 // stride, 8 // stride, planes)
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_option_a_shortcut_rejects_odd_or_negative_padding():
    with pytest.raises(ValueError, match="16 channels to 25"):
        option_a_shortcut(jnp.zeros((1, 4, 4, 16)), 25, 2)
    with pytest.raises(ValueError, match="32 channels to 16"):
        option_a_shortcut(jnp.zeros((1, 4, 4, 32)), 16, 1)


@pytest.mark.parametrize("cin, planes, stride", [(16, 24, 2), (24, 48, 2), (8, 8, 1)])
def test_basic_block_adds_the_shortcut(cin, planes, stride):
    """With the last BN's gamma at 0 the residual branch is 0, so the block is relu(shortcut)."""
    block = BasicBlock(planes, stride)
    x = jnp.abs(images(3, (2, 8, 8, cin)))  # non-negative, so relu(shortcut(x)) == shortcut(x)
    variables = block.init(key(0), x, train=False)
    params = jax.tree.map(lambda a: a, variables["params"])
    params["bn2"]["scale"] = jnp.zeros_like(params["bn2"]["scale"])
    out = block.apply({**variables, "params": params}, x, train=False)
    np.testing.assert_allclose(np.asarray(out), _numpy_option_a(x, planes, stride), atol=1e-6)
    # With real weights the block output differs from the shortcut and keeps the shape.
    out = block.apply(variables, x, train=False)
    assert out.shape == (2, 8 // stride, 8 // stride, planes)
    assert not np.allclose(np.asarray(out), _numpy_option_a(x, planes, stride))


def test_initialisation():
    block = BasicBlock(64, 1)
    variables = block.init(key(0), jnp.zeros((1, 4, 4, 64)), train=False)
    kernel = np.asarray(variables["params"]["conv1"]["kernel"])
    assert kernel.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * 64)), rtol=0.03)
    assert abs(kernel.mean()) < 3e-3
    # Untruncated normal: some weights beyond two standard deviations (~4.6 % of them).
    assert np.mean(np.abs(kernel) > 2 * np.sqrt(2.0 / 576)) > 0.03
    np.testing.assert_array_equal(variables["params"]["bn1"]["scale"], np.ones(64))
    np.testing.assert_array_equal(variables["params"]["bn1"]["bias"], np.zeros(64))
    np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"], np.ones(64))

    stem = Stem(16)
    v = stem.init(key(0), jnp.zeros((1, 4, 4, 3)), train=False)
    assert v["params"]["conv"]["kernel"].shape == (3, 3, 3, 16)
    assert "bias" not in v["params"]["conv"]

    head = LinearHead(100)
    p = head.init(key(0), jnp.zeros((1, 256)))["params"]["dense"]
    np.testing.assert_allclose(np.std(p["kernel"]), np.sqrt(2.0 / 256), rtol=0.03)
    bias = np.asarray(p["bias"])
    assert np.all(np.abs(bias) <= 1 / 16) and np.abs(bias).max() > 0.8 / 16


@pytest.mark.parametrize("unbiased", [True, False])
def test_batch_norm_momentum(unbiased):
    """Running stats move 10 % of the way to the batch stats (PyTorch momentum 0.1), eps 1e-5;
    the running variance takes PyTorch's unbiased batch variance (ddof 1 over the n = B*H*W
    values of a channel), or the biased one with `bn_unbiased=False`; the batch itself is
    normalised with the biased variance either way."""
    stem = Stem(4, bn_unbiased=unbiased)
    x = images(4, (2, 3, 3, 3)) * 3.0 + 1.0  # n = 18: the two conventions differ by 18 / 17.
    variables = stem.init(key(0), x, train=False)
    out, state = stem.apply(variables, x, train=True, mutable=["batch_stats"])
    y = np.asarray(jax.lax.conv_general_dilated(
        x, variables["params"]["conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC")), np.float64)
    mean = y.mean(axis=(0, 1, 2))
    running = y.reshape(-1, 4).var(axis=0, ddof=1 if unbiased else 0)
    stats = state["batch_stats"]["bn"]
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * running, rtol=1e-5)
    biased = y.var(axis=(0, 1, 2))
    np.testing.assert_allclose(out, np.maximum((y - mean) / np.sqrt(biased + 1e-5), 0),
                               atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Heads


def test_cosine_head_matches_numpy():
    head = CosineHead(5, scale=30.0)
    f = np.random.default_rng(1).normal(size=(6, 12)).astype(np.float32)
    f[0] = 0.0  # normalize with eps: a zero feature gives zero logits, not NaN
    params = head.init(key(0), jnp.asarray(f))["params"]
    kernel = np.asarray(params["kernel"])
    assert kernel.shape == (12, 5) and kernel.min() >= -1 and kernel.max() <= 1
    out = np.asarray(head.apply({"params": params}, jnp.asarray(f)))
    cos = np.zeros((6, 5), np.float32)
    for i in range(1, 6):
        for c in range(5):
            cos[i, c] = f[i] @ kernel[:, c] / (np.linalg.norm(f[i]) * np.linalg.norm(kernel[:, c]))
    np.testing.assert_allclose(out / 30.0, cos, atol=1e-5)
    assert np.all(np.abs(out / 30.0) <= 1 + 1e-6)
    np.testing.assert_array_equal(out[0], np.zeros(5))
    # The scale is an attribute, not a parameter.
    assert set(params) == {"kernel"}
    out32 = np.asarray(CosineHead(5, scale=32.0).apply({"params": params}, jnp.asarray(f)))
    np.testing.assert_allclose(out32 / 32.0, cos, atol=1e-5)


def test_lws_head_is_scaled_affine():
    head = LWSHead(4)
    f = np.random.default_rng(2).normal(size=(3, 9)).astype(np.float32)
    params = head.init(key(0), jnp.asarray(f))["params"]
    np.testing.assert_array_equal(params["scales"], np.ones(4))
    bound = 1 / 3.0
    assert np.all(np.abs(params["kernel"]) <= bound) and np.all(np.abs(params["bias"]) <= bound)
    affine = f @ np.asarray(params["kernel"]) + np.asarray(params["bias"])
    np.testing.assert_allclose(head.apply({"params": params}, jnp.asarray(f)), affine, atol=1e-5)
    scales = np.array([0.5, 1.0, 2.0, -1.0], np.float32)
    out = head.apply({"params": {**params, "scales": jnp.asarray(scales)}}, jnp.asarray(f))
    np.testing.assert_allclose(out, affine * scales, atol=1e-5)


def test_make_head():
    assert isinstance(make_head("linear", 3), LinearHead)
    assert isinstance(make_head("lws", 3), LWSHead)
    cosine = make_head("cosine", 3, scale=32.0)
    assert isinstance(cosine, CosineHead) and cosine.scale == 32.0
    with pytest.raises(ValueError, match=r"'tau'.*linear.*cosine.*lws"):
        make_head("tau", 3)


# ---------------------------------------------------------------------------------------------
# stop_gradient_experts


@pytest.mark.parametrize("strategy, stop", [("vmap", (1,)), ("scan", (2,))])
def test_stop_gradient_experts(strategy, stop):
    model = MultiExpertResNet(7, num_experts=3, num_shared_stages=2, stop_gradient_experts=stop,
                              expert_strategy=strategy, **SMALL)
    x = images()
    variables = small_variables(2)

    @fast_compile_jit
    def grad_of_expert(params, e):
        def expert_sum(params):
            logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                    mutable=["batch_stats"])
            return logits[e].sum()
        return jax.grad(expert_sum)(params)

    def norm(tree):
        return float(sum(jnp.sum(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)))

    for e in range(3):
        g = grad_of_expert(variables["params"], jnp.int32(e))
        trunk = norm(g["stem"]) + norm(g["stage0"]) + norm(g["stage1"])
        if e in stop:
            assert trunk == 0.0
        else:
            assert trunk > 0.0
        # The expert's own branch still learns, and only its own slice of the branch.
        own = jax.tree.map(lambda a: a[e], g[EXPERTS_NAME])
        others = jax.tree.map(lambda a: jnp.delete(a, e, axis=0), g[EXPERTS_NAME])
        assert norm(own) > 0.0 and norm(others) == 0.0


# ---------------------------------------------------------------------------------------------
# Attribute validation


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_shared_stages=4), r"num_shared_stages=4.*0\.\.3"),
    (dict(num_shared_stages=-1), r"num_shared_stages=-1"),
    (dict(strides=(1, 2)), r"\(1, 2\).*2 entries.*3"),
    (dict(expert_strategy="loop"), r"'loop'.*vmap.*scan"),
    (dict(head="tau"), r"'tau'.*linear"),
    (dict(num_experts=3, stop_gradient_experts=(3,)), r"index 3.*0\.\.2"),
    (dict(num_experts=3, stop_gradient_experts=(-1,)), r"index -1"),
    (dict(num_experts=2, num_shared_stages=0, stop_gradient_experts=(1,)), r"num_shared_stages=0"),
    (dict(num_experts=0), r"num_experts.*got 0"),
    (dict(widths=()), r"widths.*\(\)"),
])
def test_bad_attributes_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiExpertResNet(10, **kwargs)


@pytest.mark.parametrize("experts", [1, 3])
def test_default_scan_compiles_without_a_loop(experts):
    # XLA:CPU runs convolutions inside a while loop ~18x slower, so by default the expert scan is
    # fully unrolled and a single expert takes the vmap path.
    model = MultiExpertResNet(num_classes=10, num_experts=experts, widths=(4, 8, 16),
                              blocks_per_stage=1, expert_strategy="scan")
    x = jnp.zeros((2, 8, 8, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0, impl="rbg"), x, train=False))
    hlo = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])).lower(
        variables, x).compile().as_text()
    assert "while" not in hlo
    rolled = MultiExpertResNet(num_classes=10, num_experts=3, widths=(4, 8, 16),
                               blocks_per_stage=1, expert_strategy="scan", scan_unroll=1)
    rolled_variables = jax.eval_shape(
        lambda: rolled.init(jax.random.key(0, impl="rbg"), x, train=False))
    hlo = jax.jit(lambda v, x: rolled.apply(v, x, train=True, mutable=["batch_stats"])).lower(
        rolled_variables, x).compile().as_text()
    assert "while" in hlo  # The check above can fail.


def test_bfloat16_computes_the_trunk_in_bfloat16_and_keeps_parameters_and_logits_float32():
    """Mixed precision (config.model.dtype='bfloat16'): float32 parameters, BatchNorm statistics
    and logits; the loss stays close to float32's."""
    from helpers import tiny_config
    from ltx import models as models_lib
    config = tiny_config()
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        config.model.dtype = dtype
        model = models_lib.build(config.model, num_classes=10, num_experts=3)
        variables = model.init(jax.random.key(1), x, train=False)
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert logits.dtype == jnp.float32
        for leaf in jax.tree.leaves((variables, updates)):
            assert leaf.dtype == jnp.float32
        outputs[dtype] = np.asarray(logits)
    gap = np.abs(outputs["bfloat16"] - outputs["float32"]).max()
    assert 0 < gap < 0.05 * np.abs(outputs["float32"]).max()  # bfloat16 did run, and is close.


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["scan", "vmap"])
def test_cpu_materialised_relus_leave_the_train_gradient_as_it_was(monkeypatch, strategy):
    # `resnet_cifar.materialize` only stops XLA:CPU fusing each ReLU into its consumers (a speed
    # lever): the loss, the gradients and the BatchNorm updates are those without it, up to the
    # order of float32 sums inside the fused reductions (a few ulp).
    from ltx.models import resnet_cifar

    model = MultiExpertResNet(num_classes=5, num_experts=2, expert_strategy=strategy, **SMALL)
    images = jax.random.normal(jax.random.key(0), SMALL_IMAGES)
    labels = jnp.array([0, 1, 2, 4])
    variables = model.init(jax.random.key(1), images, train=False)

    def make_grad():  # A fresh function per variant: jit caches traces by function.
        def loss(params):
            logits, updates = model.apply({"params": params, "batch_stats":
                                           variables["batch_stats"]}, images, train=True,
                                          mutable=["batch_stats"])
            nll = -jax.nn.log_softmax(logits.mean(0))[jnp.arange(4), labels]
            return nll.mean(), updates
        return jax.jit(jax.value_and_grad(loss, has_aux=True))

    grad = make_grad()
    assert "optimization_barrier" in grad.lower(variables["params"]).as_text()
    with_barriers = grad(variables["params"])
    monkeypatch.setattr(resnet_cifar, "materialize", lambda x: x)
    plain = make_grad()
    assert "optimization_barrier" not in plain.lower(variables["params"]).as_text()
    without = plain(variables["params"])
    for a, b in zip(jax.tree.leaves(with_barriers), jax.tree.leaves(without)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("size, stride", [(2, 1), (4, 2), (1, 1), (8, 2), (4, 1)])
def test_small_conv_is_the_convolution_and_its_gradient(size, stride):
    """`resnet_cifar.small_conv` (a matrix product for outputs of at most 4 positions on CPU)
    gives lax's convolution and gradients within float32 rounding, and is lax's own call for
    larger outputs."""
    from ltx.models import resnet_cifar
    rng = np.random.default_rng(size * 10 + stride)
    x = jnp.asarray(rng.normal(size=(5, size, size, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 6, 7)), jnp.float32)
    args = dict(window_strides=(stride, stride), padding=((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, **args)))

    got = jax.value_and_grad(loss(resnet_cifar.small_conv), argnums=(0, 1))(x, w)
    want = jax.value_and_grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(x, w)
    out = (size + 2 - 3) // stride + 1
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        if out * out > resnet_cifar.SMALL_CONV_POSITIONS:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    program = str(jax.make_jaxpr(lambda x, w: resnet_cifar.small_conv(x, w, **args))(x, w))
    assert ("conv_general_dilated" in program) == (out * out > resnet_cifar.SMALL_CONV_POSITIONS)
    assert resnet_cifar.conv3x3(7).conv_general_dilated is resnet_cifar.small_conv
