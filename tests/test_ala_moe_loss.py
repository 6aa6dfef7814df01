"""ALA (`ltx.methods.ala_moe.loss`) against NumPy references written from the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import np_log_softmax as _np_log_softmax, np_ce as _np_ce
from ltx import losses
from ltx.methods.ala_moe import loss as ala_losses


def _np_ala(logits, labels, counts, scale, weights=None):
    counts = np.asarray(counts, np.float64)
    quantity = np.log(2.0) / np.log(counts / counts.min() + 1.0)
    z = np.array(logits, np.float64)
    for i, y in enumerate(labels):
        difficulty = (1.0 - z[..., i, y] / scale) / 2.0
        z[..., i, y] -= scale * difficulty * quantity[y]
    if z.ndim == 2:
        return _np_ce(z, labels, weights)
    return np.mean([_np_ce(zk, labels, weights) for zk in z])


def test_ala_quantity_factors():
    np.testing.assert_allclose(ala_losses.ala_quantity_factors([100, 10, 1, 3]),
                               np.log(2) / np.log([101, 11, 2, 4]), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, scale", [((1, 2), 1.0), ((12, 10), 30.0), ((3, 50, 100), 1e3)])
def test_ala_matches_numpy(dtype, shape, scale):
    rng = np.random.default_rng(shape[-1])
    cos = rng.uniform(-1, 1, shape)
    cos[..., 0, :] = np.sign(cos[..., 0, :])  # Extreme cosines: exactly +-1.
    logits = scale * cos
    classes = shape[-1]
    counts = rng.integers(1, 500, classes)
    weights = rng.uniform(0.2, 3.0, classes)
    labels = rng.integers(0, max(classes // 2, 1), shape[-2])  # Upper half of classes absent.
    with jax.enable_x64(dtype == np.float64):
        z = jnp.asarray(logits, dtype)
        got = ala_losses.ala_loss(z, labels, class_counts=counts, scale=scale)
        got_weighted = ala_losses.ala_loss(z, labels, class_counts=counts, scale=scale,
                                           class_weights=weights)
        assert got.dtype == got_weighted.dtype == dtype  # float32 at least: f32/f64 kept.
    np.testing.assert_allclose(got, _np_ala(logits, labels, counts, scale), rtol=2e-5)
    np.testing.assert_allclose(got_weighted, _np_ala(logits, labels, counts, scale, weights),
                               rtol=2e-5)


def test_ala_identities():
    rng = np.random.default_rng(5)
    scale = 30.0
    logits = (scale * rng.uniform(-1, 1, (16, 8))).astype(np.float32)
    labels = rng.integers(0, 8, 16)
    rows = np.arange(16)
    # Equal counts: QF = 1, so z_y' = z_y - s (1 - z_y / s) / 2 = 1.5 z_y - s / 2.
    adjusted = logits.copy()
    adjusted[rows, labels] = 1.5 * logits[rows, labels] - scale / 2
    np.testing.assert_allclose(
        ala_losses.ala_loss(logits, labels, class_counts=np.full(8, 40), scale=scale),
        losses.cross_entropy(adjusted, labels), rtol=1e-6)
    # A sample whose feature is aligned with its class weight (cos = 1) gets no margin.
    aligned = logits.copy()
    aligned[rows, labels] = scale
    counts = rng.integers(1, 300, 8)
    np.testing.assert_allclose(
        ala_losses.ala_loss(aligned, labels, class_counts=counts, scale=scale),
        losses.cross_entropy(aligned, labels), rtol=1e-6)
    # The rarest class at cos = -1 gets the full margin s: its target logit becomes -2 s.
    counts = np.array([100, 50, 2, 30])
    z = np.zeros((1, 4), np.float32)
    z[0, 2] = -scale
    expected = z.copy()
    expected[0, 2] = -2 * scale
    np.testing.assert_allclose(ala_losses.ala_loss(z, np.array([2]), class_counts=counts,
                                                   scale=scale),
                               losses.cross_entropy(expected, np.array([2])), rtol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_ala_margin_carries_no_gradient(weighted):
    rng = np.random.default_rng(6)
    scale, batch, classes = 30.0, 10, 6
    logits = scale * rng.uniform(-1, 1, (batch, classes))
    labels = rng.integers(0, classes, batch)
    counts = np.array([300, 120, 60, 20, 8, 2])
    weights = rng.uniform(0.5, 2.0, classes) if weighted else np.ones(classes)
    grad = jax.grad(lambda z: ala_losses.ala_loss(
        z, labels, class_counts=counts, scale=scale,
        class_weights=weights if weighted else None))(jnp.asarray(logits, jnp.float32))
    # Analytic gradient of weighted CE at z' with the margin held constant.
    quantity = np.log(2) / np.log(counts / counts.min() + 1)
    rows = np.arange(batch)
    adjusted = logits.copy()
    adjusted[rows, labels] -= scale * (1 - logits[rows, labels] / scale) / 2 * quantity[labels]
    onehot = np.eye(classes)[labels]
    w = weights[labels][:, None]
    expected = w * (np.exp(_np_log_softmax(adjusted)) - onehot) / w.sum()
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_ala_rejects_bad_input():
    z, y = np.zeros((4, 5), np.float32), np.arange(4)
    with pytest.raises(ValueError, match=r"ala_loss: class_counts must be finite and positive "
                                         r".* got \[0.0\] for classes \[1\]"):
        ala_losses.ala_loss(z, y, class_counts=[3, 0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"got \[-2.0\] for classes \[0\]"):
        ala_losses.ala_loss(z, y, class_counts=[-2, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="ala_loss: scale must be a finite number > 0, got 0.0"):
        ala_losses.ala_loss(z, y, class_counts=np.ones(5), scale=0.0)
    with pytest.raises(ValueError, match=r"class_weights must be \[C\] = \[5\], got shape \(4,\)"):
        ala_losses.ala_loss(z, y, class_counts=np.ones(5), class_weights=np.ones(4))
    with pytest.raises(ValueError, match=r"\[B, C\] or \[E, B, C\]"):
        ala_losses.ala_loss(z[None, None], y, class_counts=np.ones(5))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\), got \[7\]"):
        ala_losses.ala_loss(z, np.array([0, 7, 1, 2]), class_counts=np.ones(5))
    with pytest.raises(ValueError, match="class_counts has 6 entries but the logits have C = 5"):
        ala_losses.ala_loss(z, y, class_counts=np.ones(6))
