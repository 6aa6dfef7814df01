"""Class-balanced experts' losses (`ltx.methods.cbe.loss`) against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import np_log_softmax as _np_log_softmax
from ltx import losses
from ltx.methods.cbe import loss as cbe_losses


def _np_oe(logits, labels, mask, weight):
    local = {c: k for k, c in enumerate(np.flatnonzero(mask))}
    log_probs = _np_log_softmax(np.asarray(logits, np.float64))
    inside = [i for i, y in enumerate(labels) if mask[y]]
    outside = [i for i, y in enumerate(labels) if not mask[y]]
    ce = np.mean([-log_probs[i, local[labels[i]]] for i in inside]) if inside else 0.0
    oe = np.mean([-log_probs[i].mean() for i in outside]) if outside else 0.0
    return ce + weight * oe


def test_reject_class_labels_rank_within_the_expert_and_put_others_last():
    mask = np.array([False, True, False, True, True])
    np.testing.assert_array_equal(cbe_losses.reject_class_labels(np.arange(5), mask),
                                  [3, 0, 3, 1, 2])
    rng = np.random.default_rng(3)
    mask = rng.uniform(size=50) < 0.3
    labels = rng.integers(0, 50, 200)
    local = {c: k for k, c in enumerate(np.flatnonzero(mask))}
    expected = [local.get(y, mask.sum()) for y in labels]
    np.testing.assert_array_equal(cbe_losses.reject_class_labels(labels, mask), expected)


def test_reject_undersample():
    labels = np.repeat(np.arange(6), [50, 40, 30, 7, 5, 3])
    mask = np.array([False, False, False, True, True, True])  # Few-shot expert: 15 images.
    many = np.array([True, True, False, False, False, False])  # Many-shot expert: 90 images.
    kept = cbe_losses.reject_undersample(labels, many, open_ratio=16, seed=0)
    np.testing.assert_array_equal(kept[:90], np.arange(90))
    assert kept.size == 90 + 90 // 16 and many[labels[kept[:90]]].all()
    assert not many[labels[kept[90:]]].any() and np.unique(kept).size == kept.size
    np.testing.assert_array_equal(kept, cbe_losses.reject_undersample(labels, many, open_ratio=16))
    assert not np.array_equal(kept, cbe_losses.reject_undersample(labels, many, open_ratio=16,
                                                                  seed=1))
    # 1:n sampling: as many reject images as an average expert class (90 // 2 = 45).
    assert cbe_losses.reject_undersample(labels, many, open_ratio=-1).size == 90 + 45
    assert cbe_losses.reject_undersample(labels, mask, open_ratio=1).size == 15 + 15
    # Never more reject images than exist: 10 expert images, ratio 1, only 3 others.
    np.testing.assert_array_equal(np.sort(cbe_losses.reject_undersample(
        np.repeat([0, 1], [3, 10]), np.array([False, True]), open_ratio=1)), np.arange(13))
    with pytest.raises(ValueError, match="open_ratio=0"):
        cbe_losses.reject_undersample(labels, mask, open_ratio=0)
    with pytest.raises(ValueError,
                       match=r"reject_undersample: labels must be in \[0, 6\), got \[6\]"):
        cbe_losses.reject_undersample(np.append(labels, 6), mask)


def test_reject_logit_correction():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 7, 5)).astype(np.float32)
    expected = logits.copy()
    expected[..., -1] -= np.log(2 / (1 + 16))  # As written in jointCalibration.py.
    np.testing.assert_allclose(cbe_losses.reject_logit_correction(logits, open_ratio=16), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(cbe_losses.reject_logit_correction(logits, open_ratio=1), logits)
    with pytest.raises(ValueError, match="open_ratio must be a finite number > 0, got 0"):
        cbe_losses.reject_logit_correction(logits, open_ratio=0)
    with pytest.raises(ValueError, match="reject class last"):
        cbe_losses.reject_logit_correction(logits[..., :1], open_ratio=16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, classes, scale", [(1, 2, 1.0), (20, 10, 10.0),
                                                   (64, 100, 1e3)])
def test_outlier_exposure_matches_numpy(dtype, batch, classes, scale):
    rng = np.random.default_rng(batch)
    mask = rng.uniform(size=classes) < 0.5
    mask[0] = True
    logits = rng.normal(size=(batch, mask.sum())) * scale
    labels = rng.integers(0, classes, batch)
    for weight in (0.5, 2.0):
        with jax.enable_x64(dtype == np.float64):
            got = cbe_losses.outlier_exposure_loss(jnp.asarray(logits, dtype), labels,
                                                   in_expert_mask=mask, weight=weight)
            assert got.dtype == dtype  # float32 at least: f32/f64 kept.
        np.testing.assert_allclose(got, _np_oe(logits, labels, mask, weight), rtol=2e-5)


def test_outlier_exposure_identities():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(16, 6)).astype(np.float32) * 4
    labels = rng.integers(0, 6, 16)
    # An expert over all classes sees no outliers: plain cross-entropy.
    np.testing.assert_allclose(
        cbe_losses.outlier_exposure_loss(logits, labels, in_expert_mask=np.ones(6, bool)),
        losses.cross_entropy(logits, labels), rtol=1e-6)
    # Only outliers and uniform logits: weight * CE(uniform, uniform) = weight * log K.
    mask = np.array([True, True, True, False, False, False, False])
    np.testing.assert_allclose(
        cbe_losses.outlier_exposure_loss(np.zeros((4, 3), np.float32), np.array([3, 4, 5, 6]),
                                         in_expert_mask=mask, weight=0.5), 0.5 * np.log(3),
        rtol=1e-6)


def test_outlier_exposure_rejects_bad_input():
    mask = np.array([True, False, True])
    with pytest.raises(ValueError, match="3 columns but in_expert_mask selects 2 classes"):
        cbe_losses.outlier_exposure_loss(np.zeros((4, 3)), np.arange(3).repeat(2)[:4],
                                         in_expert_mask=mask)
    with pytest.raises(ValueError, match=r"must be 1-D \[C\]"):
        cbe_losses.outlier_exposure_loss(np.zeros((4, 2)), np.zeros(4, int),
                                         in_expert_mask=mask[None])
    with pytest.raises(ValueError, match="selects no class"):
        cbe_losses.reject_class_labels(np.zeros(4, int), np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got \[3\]"):
        cbe_losses.outlier_exposure_loss(np.zeros((4, 2)), np.array([0, 1, 2, 3]),
                                         in_expert_mask=mask)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        cbe_losses.outlier_exposure_loss(np.zeros((1, 4, 2)), np.zeros(4, int), in_expert_mask=mask)
