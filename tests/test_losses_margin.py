"""Focal loss, LDAM margins/loss and DRW weights against NumPy references from the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import np_log_softmax as _np_log_softmax
from ltx import losses

# CIFAR-100-LT, imbalance ratio 100: n_i = int(500 * 0.01^(i / 99)).
CIFAR100_IR100 = np.array([int(500 * 0.01 ** (i / 99)) for i in range(100)])


def _np_nll(z, y):
    return -_np_log_softmax(z)[np.arange(len(y)), y]


def _np_margins(counts, max_m):
    m = np.asarray(counts, np.float64) ** -0.25
    return m * max_m / m.max()


def _np_drw(counts, beta):
    w = (1 - beta) / (1 - beta ** np.asarray(counts, np.float64))
    return w / w.sum() * len(counts)


def _np_focal(logits, labels, gamma, weights=None):
    ce = _np_nll(logits.astype(np.float64), labels)
    if weights is not None:
        ce = ce * weights[labels]
    p = np.exp(-ce)
    return np.mean((1 - p) ** gamma * ce)


def _np_ldam_cosine(cos, labels, counts, max_m, s, weights=None):
    """LDAM-DRW's convention: the model gives cosines, the loss is CE(s * (cos - m_y e_y))."""
    z = cos.astype(np.float64).copy()
    z[np.arange(len(labels)), labels] -= _np_margins(counts, max_m)[labels]
    nll = _np_nll(s * z, labels)
    if weights is None:
        return nll.mean()
    w = weights[labels]
    return (w * nll).sum() / w.sum()


# (batch, classes, logit multiplier, labels drawn from a subset of classes?)
CASES = [(1, 2, 1.0, False), (7, 10, 3.0, True), (64, 100, 1.0, True), (16, 6, 1e3, True)]


def _case(batch, classes, mult, subset, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 500, classes)
    logits = rng.normal(size=(batch, classes)) * mult
    pool = rng.choice(classes, max(1, classes // 2), replace=False) if subset else classes
    labels = rng.choice(pool, batch)
    return logits, labels, counts


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def test_ldam_margins_match_formula_and_cifar100_values():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 1000, 37)
    np.testing.assert_allclose(losses.ldam_margins(counts, max_margin=0.3),
                               _np_margins(counts, 0.3), rtol=1e-6)
    m = np.asarray(losses.ldam_margins(CIFAR100_IR100))
    assert m.max() == pytest.approx(0.5)
    assert m[0] == pytest.approx(0.158, abs=5e-4) and m[-1] == pytest.approx(0.5)
    np.testing.assert_array_equal(losses.ldam_margins(counts, max_margin=0.0), 0.0)


def test_drw_class_weights_match_formula_and_cifar100_values():
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 5000, 23)
    for beta in (0.9, 0.999, 0.9999):
        w = np.asarray(losses.drw_class_weights(counts, beta=beta))
        np.testing.assert_allclose(w, _np_drw(counts, beta), rtol=1e-6)
        assert w.sum() == pytest.approx(len(counts), rel=1e-6)
    np.testing.assert_allclose(losses.drw_class_weights(counts, beta=0.0), 1.0, rtol=1e-7)
    w = np.asarray(losses.drw_class_weights(CIFAR100_IR100))
    assert w[0] == pytest.approx(0.0449, abs=5e-5) and w[-1] == pytest.approx(4.378, abs=5e-4)


def test_class_statistics_are_float64_under_x64():
    counts = CIFAR100_IR100
    with jax.enable_x64(True):
        m = losses.ldam_margins(counts)
        w = losses.drw_class_weights(counts)
    assert m.dtype == jnp.float64 and w.dtype == jnp.float64
    np.testing.assert_allclose(w, _np_drw(counts, 0.9999), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_matches_numpy(dtype, case, gamma, weighted):
    logits, labels, counts = _case(*case, seed=CASES.index(case) + int(gamma * 10))
    logits = logits.astype(dtype)
    weights = _np_drw(counts, 0.999) if weighted else None
    with jax.enable_x64(dtype == np.float64):
        got = losses.focal_loss(jnp.asarray(logits), labels, gamma=gamma, class_weights=weights)
        assert got.dtype == (jnp.float64 if dtype == np.float64 else jnp.float32)
    np.testing.assert_allclose(got, _np_focal(logits, labels, gamma, weights), **_tol(dtype))


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, labels, _ = _case(32, 10, 5.0, True, seed=3)
    logits = logits.astype(np.float32)
    np.testing.assert_allclose(losses.focal_loss(logits, labels, gamma=0.0),
                               losses.cross_entropy(logits, labels), rtol=1e-6)


def test_focal_weights_enter_the_modulation_and_the_mean_is_over_the_batch():
    # Two classes, zero logits: unweighted CE is log 2 per sample. Weights (2, 0.5) give weighted
    # CEs 2 log 2 and 0.5 log 2, so p = 1/4 and 2^-1/2, and the result is their plain mean.
    logits = np.zeros((2, 2), np.float32)
    labels = np.array([0, 1])
    weights = np.array([2.0, 0.5])
    gamma = 2.0
    ce = np.array([2, 0.5]) * np.log(2)
    expected = np.mean((1 - np.exp(-ce)) ** gamma * ce)
    got = losses.focal_loss(logits, labels, gamma=gamma, class_weights=weights)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Not PyTorch's weighted mean (divided by the sum of target weights).
    assert abs(float(got) - np.sum((1 - np.exp(-ce)) ** gamma * ce) / 2.5) > 1e-3


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_gradient_is_finite_on_perfectly_confident_samples(gamma):
    logits = np.array([[200.0, 0.0, 0.0], [0.0, 3.0, 1.0]], np.float32)  # Sample 0 has ce = 0.
    labels = np.array([0, 2])
    grad = jax.grad(lambda z: losses.focal_loss(z, labels, gamma=gamma))(logits)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0], 0.0, atol=1e-30)
    assert np.abs(grad[1]).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_matches_numpy(dtype, case, weighted):
    cos, labels, counts = _case(*case, seed=11 + CASES.index(case))
    cos = np.tanh(cos) if case[2] == 1.0 else cos  # Real cosines, and extreme values.
    for scale, max_m in [(30.0, 0.5), (1.0, 0.3), (64.0, 0.5)]:
        logits = (scale * cos).astype(dtype)
        weights = _np_drw(counts, 0.9999) if weighted else None
        with jax.enable_x64(dtype == np.float64):
            got = losses.ldam_loss(jnp.asarray(logits), labels, class_counts=counts,
                                   max_margin=max_m, scale=scale, class_weights=weights)
            assert got.dtype == (jnp.float64 if dtype == np.float64 else jnp.float32)
        # The reference takes the cosines that the (rounded) scaled logits represent.
        expected = _np_ldam_cosine(logits.astype(np.float64) / scale, labels, counts, max_m,
                                   scale, weights)
        np.testing.assert_allclose(got, expected, **_tol(dtype), err_msg=f"scale {scale}")


def test_ldam_margin_is_scale_times_m_on_the_scaled_target_logit():
    # counts (16, 1): margins (0.25, 0.5). Label 1, zero logits, s = 30: the target logit becomes
    # -15, so the loss is log(1 + e^15); a margin not multiplied by s would give log(1 + e^0.5).
    got = losses.ldam_loss(np.zeros((1, 2), np.float32), np.array([1]), class_counts=[16, 1],
                           scale=30.0)
    np.testing.assert_allclose(got, np.logaddexp(0.0, 15.0), rtol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_with_zero_margin_is_cross_entropy_on_the_scaled_logits(weighted):
    cos, labels, counts = _case(32, 10, 1.0, True, seed=5)
    logits = (30.0 * np.tanh(cos)).astype(np.float32)
    weights = _np_drw(counts, 0.9999) if weighted else None
    for scale in (30.0, 1.0):  # The scale only multiplies the margin.
        np.testing.assert_allclose(
            losses.ldam_loss(logits, labels, class_counts=counts, max_margin=0.0, scale=scale,
                             class_weights=weights),
            losses.cross_entropy(logits, labels, class_weights=weights), rtol=1e-6)
    # And a non-zero margin changes it.
    assert abs(float(losses.ldam_loss(logits, labels, class_counts=counts)) -
               float(losses.cross_entropy(logits, labels))) > 1e-2


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_margin_losses_on_a_batch_sharded_mesh_equal_unsharded(axis_type):
    mesh = jax.make_mesh((4,), ("data",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    rng = np.random.default_rng(7)
    logits = (30 * np.tanh(rng.normal(size=(16, 10)))).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    counts = rng.integers(1, 300, 10)
    weights = np.asarray(losses.drw_class_weights(counts))

    def fn(z, y):
        return (losses.focal_loss(z, y, gamma=1.0),
                losses.focal_loss(z, y, gamma=2.0, class_weights=weights),
                losses.ldam_loss(z, y, class_counts=counts),
                losses.ldam_loss(z, y, class_counts=counts, class_weights=weights))

    z = jax.device_put(logits, NamedSharding(mesh, P("data")))
    y = jax.device_put(labels, NamedSharding(mesh, P("data")))
    with jax.set_mesh(mesh):
        sharded = jax.jit(fn)(z, y)
    for a, b in zip(sharded, fn(logits, labels)):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def _focal(z, y, **kw):
    return losses.focal_loss(z, y, gamma=kw.pop("gamma", 1.0), **kw)


def _ldam(z, y, **kw):
    return losses.ldam_loss(z, y, class_counts=kw.pop("class_counts", np.ones(5)), **kw)


@pytest.mark.parametrize("fn", [_focal, _ldam])
@pytest.mark.parametrize("logits, labels, kwargs, match", [
    (np.zeros(5), np.zeros(1, int), {}, r"logits must be \[B, C\], got shape \(5,\)"),
    (np.zeros((2, 4, 5)), np.zeros(4, int), {}, r"logits must be \[B, C\]"),
    (np.zeros((4, 5)), np.zeros(3, int), {}, r"labels must be \[B\] with B = 4"),
    (np.zeros((4, 5)), np.zeros((4, 1), int), {}, r"labels must be \[B\]"),
    (np.zeros((4, 5)), np.zeros(4), {}, "labels must be integer"),
    (np.zeros((4, 5)), np.array([0, 1, 5, 2]), {}, r"labels must be in \[0, 5\), got \[5\]"),
    (np.zeros((4, 5)), np.array([0, -1, 2, 2]), {}, r"labels must be in \[0, 5\), got \[-1\]"),
    (np.zeros((4, 5)), np.zeros(4, int), {"class_weights": np.ones(4)},
     r"class_weights must be \[C\] = \[5\]"),
])
def test_margin_losses_reject_bad_shapes_and_labels(fn, logits, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(logits, labels, **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.focal_loss(np.zeros((2, 3)), np.zeros(2, int), gamma=-1.0),
     "gamma must be a finite number >= 0, got -1.0"),
    (lambda: losses.ldam_loss(np.zeros((2, 3)), np.zeros(2, int), class_counts=[5, -1, 2]),
     r"class_counts must be finite and positive .* got \[-1.0\] for classes \[1\]"),
    (lambda: losses.ldam_loss(np.zeros((2, 3)), np.zeros(2, int), class_counts=[5, 0, 2]),
     r"class_counts must be finite and positive"),
    (lambda: losses.ldam_loss(np.zeros((2, 3)), np.zeros(2, int), class_counts=[5, 2]),
     "class_counts has 2 entries but the logits have C = 3 classes"),
    (lambda: losses.ldam_loss(np.zeros((2, 3)), np.zeros(2, int), class_counts=[5, 1, 2],
                              scale=0.0), "scale must be a finite number > 0"),
    (lambda: losses.ldam_margins([3, -2]), r"class_counts must be finite and positive"),
    (lambda: losses.ldam_margins(np.ones((2, 2))), r"class_counts must be a non-empty \[C\]"),
    (lambda: losses.ldam_margins([3, 2], max_margin=-0.1), "max_margin must be"),
    (lambda: losses.drw_class_weights([3, -2]), r"class_counts must be finite and positive"),
    (lambda: losses.drw_class_weights([3, 2], beta=1.0), r"beta must be in \[0, 1\), got 1.0"),
])
def test_bad_hyperparameters_and_counts_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_labels_are_only_range_checked_when_concrete():
    # Inside jit the range is unknown; the one-hot of an out-of-range label is all zeros.
    fn = jax.jit(lambda y: losses.focal_loss(jnp.zeros((2, 3)), y, gamma=1.0))
    assert np.isfinite(fn(jnp.array([0, 3])))
    with pytest.raises(ValueError, match="labels must be in"):
        losses.focal_loss(jnp.zeros((2, 3)), jnp.array([0, 3]), gamma=1.0)
