"""BatchNorm as PyTorch trains it (`ltx.models.batch_norm`), its mask for padded batches, and the
cosine head's official initialisation; values written from the definitions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import assert_trees_close

from ltx import models
from ltx.models.batch_norm import BatchNorm
from ltx.models.heads import CosineHead, normed_linear_init


def _batch(shape=(8, 3, 3, 4), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 2.0 + 0.5


def _train(module, x, mask=None, variables=None):
    if variables is None:
        variables = module.init(jax.random.key(0), x)
    out, state = module.apply(variables, x, mask, mutable=["batch_stats"])
    return np.asarray(out), jax.device_get(state["batch_stats"])


def test_running_variance_is_pytorchs_unbiased_update():
    x = _batch()
    out, stats = _train(BatchNorm(), x)
    values = x.reshape(-1, 4).astype(np.float64)  # n = 8 * 3 * 3 = 72 values per channel.
    mean, unbiased, biased = values.mean(0), values.var(0, ddof=1), values.var(0, ddof=0)
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * unbiased, rtol=1e-6)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(biased + 1e-5), rtol=1e-4, atol=1e-5)


def test_biased_convention_is_flaxs_batch_norm():
    x = _batch(seed=1)
    ours = BatchNorm(unbiased_running_var=False)
    theirs = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = theirs.init(jax.random.key(0), x)
    out, stats = _train(ours, x, variables=variables)
    out_flax, state = theirs.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(out, out_flax, rtol=1e-4, atol=1e-5)
    assert_trees_close(stats, state["batch_stats"], rtol=1e-5, atol=1e-7)
    # Same variables, same names: an ltx checkpoint reads either way.
    assert jax.tree.structure(variables) == jax.tree.structure(
        ours.init(jax.random.key(0), x))


def test_inference_uses_the_running_statistics_and_ignores_the_mask():
    x = _batch(seed=2)
    bn = BatchNorm(use_running_average=True)
    variables = {"params": {"scale": jnp.full(4, 2.0), "bias": jnp.full(4, 0.5)},
                 "batch_stats": {"mean": jnp.arange(4.0), "var": jnp.arange(1.0, 5.0)}}
    out = bn.apply(variables, x, np.arange(8) < 3)
    expected = (x - np.arange(4.0)) / np.sqrt(np.arange(1.0, 5.0) + 1e-5) * 2.0 + 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_a_masked_batch_has_the_statistics_of_its_real_rows():
    x = _batch(seed=3)
    x[5:] = 1e3  # Padding that would dominate every statistic if it counted.
    out, stats = _train(BatchNorm(), x, mask=np.arange(8) < 5)
    out_alone, stats_alone = _train(BatchNorm(), x[:5])
    assert_trees_close(stats, stats_alone, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[:5], out_alone, rtol=1e-5, atol=1e-5)
    # n counts the real rows only: 5 * 3 * 3 = 45 values per channel.
    values = x[:5].reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * values.var(0, ddof=1), rtol=1e-6)


def _model_config(strategy, running_var="unbiased"):
    return ml_collections.ConfigDict(dict(
        name="resnet32", widths=(4, 8, 8), blocks_per_stage=1, strides=(1, 2, 2),
        num_shared_stages=1, head="cosine", cosine_scale=30.0, expert_strategy=strategy,
        bn_running_var=running_var))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["scan", "vmap"])
def test_a_padded_batch_through_a_multi_expert_trunk_equals_the_smaller_batch(strategy):
    model = models.build(_model_config(strategy), num_classes=5, num_experts=2)
    x = _batch((6, 8, 8, 1), seed=4)
    x[4:] = 30.0
    variables = model.init(jax.random.key(0, impl="rbg"), x, train=False)

    def train(images, mask):
        return model.apply(variables, images, train=True, mask=mask, mutable=["batch_stats"])

    (logits, state) = train(x, np.arange(6) < 4)
    (logits_alone, state_alone) = train(x[:4], None)
    assert logits.shape == (2, 6, 5)
    np.testing.assert_allclose(logits[:, :4], logits_alone, rtol=1e-4, atol=1e-5)
    assert_trees_close(state["batch_stats"], state_alone["batch_stats"], rtol=1e-5, atol=1e-6)
    # Without the mask the padding moves the statistics: the comparison above can fail.
    _, unmasked = train(x, None)
    expert_var = lambda s: np.asarray(s["experts"]["stage1"]["block0"]["bn1"]["var"])  # noqa
    assert np.abs(expert_var(unmasked["batch_stats"])
                  - expert_var(state_alone["batch_stats"])).max() > 1e-2


@pytest.mark.slow
def test_bn_running_var_is_checked_and_selects_the_convention():
    with pytest.raises(ValueError, match="model.bn_running_var='torch'; expected one of"):
        models.build(_model_config("scan", "torch"), num_classes=5, num_experts=1)
    x = _batch((4, 8, 8, 1), seed=5)
    stats = {}
    for convention in ("unbiased", "biased"):
        model = models.build(_model_config("scan", convention), num_classes=5, num_experts=1)
        variables = model.init(jax.random.key(0, impl="rbg"), x, train=False)
        _, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
        stats[convention] = np.asarray(state["batch_stats"]["stem"]["bn"]["var"])
    # The stem BN sees n = 4 * 8 * 8 = 256 values: running var 0.9 + 0.1 v, v unbiased = 256/255 v.
    np.testing.assert_allclose((stats["unbiased"] - 0.9), (stats["biased"] - 0.9) * 256 / 255,
                               rtol=1e-5)


@pytest.mark.parametrize("features", [64, 48, 1536])
def test_cosine_head_columns_start_at_unit_norm(features):
    """The official NormedLinear: uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5) on [F, C]."""
    head = CosineHead(100, scale=30.0)
    f = np.random.default_rng(features).normal(size=(3, features)).astype(np.float32)
    kernel = np.asarray(head.init(jax.random.key(features), jnp.asarray(f))["params"]["kernel"])
    assert kernel.shape == (features, 100)
    np.testing.assert_allclose(np.linalg.norm(kernel.astype(np.float64), axis=0), 1.0, atol=1e-6)
    # The initialiser is a rescaled U(-1, 1) draw: every column keeps its random direction.
    k = jax.random.key(7)
    raw = np.asarray(jax.random.uniform(k, (features, 100), jnp.float32, -1.0, 1.0), np.float64)
    norms = np.linalg.norm(raw, axis=0)
    np.testing.assert_allclose(normed_linear_init(k, (features, 100)),
                               raw * (1e-5 / (norms + 1e-7)) * 1e5, rtol=1e-6, atol=1e-8)
    out = np.asarray(head.apply({"params": {"kernel": kernel}}, jnp.asarray(f)))
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ kernel
    np.testing.assert_allclose(out, 30.0 * cos, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("masked", [False, True])
def test_written_out_gradient_equals_the_derivative_of_the_formula(masked):
    # `normalize`'s written-out backward pass against autodiff of the definition: x's, scale's
    # and bias's gradients under cotangents on all three outputs (y, and the mean and variance
    # that feed the running statistics), padding rows included.
    from ltx.models.batch_norm import normalize

    rng = np.random.default_rng(3)
    x = jnp.asarray(_batch((6, 3, 3, 4), seed=3), jnp.float32)
    scale, bias = (jnp.asarray(rng.normal(size=4), jnp.float32) for _ in range(2))
    weights = jnp.asarray([1, 1, 0, 1, 1, 0] if masked else [1] * 6, jnp.float32)

    def definition(x, scale, bias):
        w = weights[:, None, None, None]
        n = weights.sum() * 9
        mean = jnp.sum(x * w, axis=(0, 1, 2)) / n
        var = jnp.sum((x - mean) ** 2 * w, axis=(0, 1, 2)) / n
        return (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias, mean, var

    outputs = definition(x, scale, bias)
    for got, want in zip(normalize(x, scale, bias, weights, 1e-5), outputs):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    cotangents = [jnp.asarray(rng.normal(size=o.shape), jnp.float32) for o in outputs]

    def pairing(fn):
        return lambda *a: sum(jnp.sum(o * c) for o, c in zip(fn(*a), cotangents))

    got = jax.grad(pairing(lambda *a: normalize(*a, weights, 1e-5)), argnums=(0, 1, 2))(
        x, scale, bias)
    want = jax.grad(pairing(definition), argnums=(0, 1, 2))(x, scale, bias)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    if masked:  # The padding rows' own inputs do not move the statistics.
        only_y = jax.grad(lambda x: jnp.sum(normalize(x, scale, bias, weights, 1e-5)[0]
                                            * cotangents[0] * weights[:, None, None, None]))(x)
        np.testing.assert_array_equal(only_y[2], 0.0)
