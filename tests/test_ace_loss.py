"""ACE's planner and loss (`ltx.methods.ace.loss`) against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import np_log_softmax as _np_log_softmax
from ltx import losses
from ltx.data.long_tail import long_tail_counts
from ltx.methods.ace import loss as ace_losses
from ltx.methods.cbe import loss as cbe_losses


def _np_ce(logits, labels):
    return -_np_log_softmax(np.asarray(logits, np.float64))[np.arange(len(labels)), labels].mean()


def _np_split_index(counts, e):
    """The j with r_j > e >= r_{j+1}, r_j = sum_{i >= j} n_i / N, r_C = 0 (by a plain loop)."""
    total = float(np.sum(counts))
    residual = [sum(counts[j:]) / total for j in range(len(counts) + 1)]
    matches = [j for j in range(len(counts)) if residual[j] > e >= residual[j + 1]]
    assert len(matches) == 1
    return matches[0]


def _np_ace(expert_logits, labels, masks):
    """Boolean indexing on the selected samples, as the official loss."""
    total = 0.0
    for z, targets in zip(np.asarray(expert_logits, np.float64), masks):
        selected = targets[labels]
        if not selected.any():
            continue
        sub = z[selected]
        loss = _np_ce(sub, labels[selected])
        interfering = ~targets
        if interfering.any():
            loss += np.linalg.norm(sub[:, interfering], "fro") / interfering.sum()
        total += loss
    return total


# ------------------------------------------------------------------------------------------
# ACE planner


@pytest.mark.parametrize("ratio, thresholds, splits", [(100, (0.3, 0.03), (25, 68)),
                                                       (50, (0.4, 0.1), (22, 53))])
def test_ace_split_reproduces_the_cifar100_splits(ratio, thresholds, splits):
    counts = long_tail_counts(500, 100, ratio)
    masks = ace_losses.ace_split(counts, thresholds)
    assert masks.shape == (3, 100) and masks.dtype == np.bool_
    assert masks[0].all()
    for mask, j in zip(masks[1:], splits):
        np.testing.assert_array_equal(mask, np.arange(100) >= j)
    if ratio == 100:  # TC2 holds 30.4% of the images, TC3 3.2%.
        np.testing.assert_allclose(counts[masks[1]].sum() / counts.sum(), 0.304, atol=5e-4)
        np.testing.assert_allclose(counts[masks[2]].sum() / counts.sum(), 0.032, atol=5e-4)


@pytest.mark.parametrize("seed", range(5))
def test_ace_split_matches_the_residual_mass_definition(seed):
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(0, 200, rng.integers(2, 40)))[::-1]
    counts[0] += 1
    thresholds = np.sort(rng.uniform(0, 1, 3))[::-1]
    thresholds[-1] = 0.0 if seed == 0 else thresholds[-1]  # e = 0 selects the last non-empty class.
    masks = ace_losses.ace_split(counts, thresholds)
    for mask, e in zip(masks[1:], thresholds):
        np.testing.assert_array_equal(mask, np.arange(len(counts)) >= _np_split_index(counts, e))


def test_ace_split_rejects_bad_input():
    with pytest.raises(ValueError, match="sorted by descending count"):
        ace_losses.ace_split([10, 20, 5], (0.3,))
    with pytest.raises(ValueError, match="threshold 1.0 out of range"):
        ace_losses.ace_split([30, 20, 5], (1.0,))
    with pytest.raises(ValueError, match="strictly decreasing"):
        ace_losses.ace_split([30, 20, 5], (0.1, 0.3))
    with pytest.raises(ValueError,
                       match=r"ace_split: class_counts must be .* got \[-5.0\] for classes \[2\]"):
        ace_losses.ace_split([30, 20, -5], (0.3,))


# ------------------------------------------------------------------------------------------
# ACE loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("experts, batch, classes, scale", [(1, 1, 2, 1.0), (3, 16, 10, 10.0),
                                                            (4, 64, 100, 1e3)])
def test_ace_loss_matches_numpy(dtype, experts, batch, classes, scale):
    rng = np.random.default_rng(batch)
    logits = rng.normal(size=(experts, batch, classes)) * scale
    counts = np.sort(rng.integers(1, 500, classes))[::-1]
    masks = ace_losses.ace_split(counts, np.linspace(0.5, 0.05, experts - 1))
    labels = rng.integers(0, classes, batch)
    labels[: batch // 2] = 0  # Many head-class samples, so some tail classes are absent.
    with jax.enable_x64(dtype == np.float64):
        got = ace_losses.ace_loss(jnp.asarray(logits, dtype), labels, target_masks=masks)
        per_expert = ace_losses.ace_expert_losses(jnp.asarray(logits, dtype), labels,
                                                  target_masks=masks)
        assert got.dtype == per_expert.dtype == dtype  # float32 at least: f32/f64 kept.
    np.testing.assert_allclose(got, _np_ace(logits, labels, masks), rtol=2e-5)
    np.testing.assert_allclose(per_expert, [_np_ace(z[None], labels, m[None])
                                            for z, m in zip(logits, masks)], rtol=2e-5)


def test_ace_empty_subsets_contribute_zero_and_keep_finite_gradients():
    rng = np.random.default_rng(1)
    masks = ace_losses.ace_split([400, 200, 100, 50, 25, 10], (0.3, 0.05))
    logits = rng.normal(size=(3, 8, 6)).astype(np.float32)
    labels = np.zeros(8, int)  # Only the head class: experts 1 and 2 select nothing.
    per_expert = ace_losses.ace_expert_losses(logits, labels, target_masks=masks)
    np.testing.assert_allclose(per_expert, [_np_ce(logits[0], labels), 0.0, 0.0], rtol=1e-6)
    grad = jax.grad(lambda z: ace_losses.ace_loss(z, labels, target_masks=masks))(logits)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[1:], 0.0)
    # Selected samples whose interfering logits are all zero: the norm's gradient is 0, not NaN.
    zeros = np.zeros((3, 8, 6), np.float32)
    grad = jax.grad(lambda z: ace_losses.ace_loss(z, np.full(8, 5), target_masks=masks))(zeros)
    assert np.isfinite(grad).all()


def test_ace_norm_term_is_unsquared_over_the_whole_submatrix():
    masks = np.array([[False, False, True]])  # One expert: target class 2, interfering 0 and 1.
    one = np.array([[[3.0, 4.0, 0.0]]], np.float32)
    two = np.concatenate([one, one], axis=1)
    ce = _np_ce(one[0], [2])
    # ||[3, 4]|| / 2 = 2.5 (squared would give 12.5).
    np.testing.assert_allclose(ace_losses.ace_loss(one, np.array([2]), target_masks=masks),
                               ce + 2.5, rtol=1e-6)
    # Two identical rows: sqrt(50) / 2, not the per-sample mean 2.5.
    np.testing.assert_allclose(ace_losses.ace_loss(two, np.array([2, 2]), target_masks=masks),
                               ce + np.sqrt(50) / 2, rtol=1e-6)


def test_ace_with_one_all_class_expert_is_cross_entropy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 32, 10)).astype(np.float32) * 5
    labels = rng.integers(0, 10, 32)
    np.testing.assert_allclose(
        ace_losses.ace_loss(logits, labels, target_masks=np.ones((1, 10), bool)),
        losses.cross_entropy(logits[0], labels), rtol=1e-6)


def test_ace_loss_rejects_bad_input():
    z, y = np.zeros((3, 4, 5), np.float32), np.arange(4)
    masks = np.ones((3, 5), bool)
    with pytest.raises(ValueError, match=r"target_masks has shape \(2, 5\); expected \[E, C\]"):
        ace_losses.ace_loss(z, y, target_masks=masks[:2])
    with pytest.raises(ValueError, match=r"shape \(3, 4\); expected .* = \(3, 5\)"):
        ace_losses.ace_loss(z, y, target_masks=masks[:, :4])
    with pytest.raises(ValueError, match=r"target_masks\[1\] selects no class"):
        ace_losses.ace_loss(z, y, target_masks=np.array([[1, 1, 1, 1, 1], [0] * 5, [1] * 5]))
    with pytest.raises(ValueError, match="boolean"):
        ace_losses.ace_loss(z, y, target_masks=np.full((3, 5), 2))
    with pytest.raises(ValueError, match=r"\[E, B, C\]"):
        ace_losses.ace_loss(z[0], y, target_masks=masks)
    with pytest.raises(ValueError,
                       match=r"ace_expert_losses: labels must be in \[0, 5\), got \[5\]"):
        ace_losses.ace_loss(z, np.array([0, 1, 2, 5]), target_masks=masks)
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda m: ace_losses.ace_loss(z, y, target_masks=m))(masks)


# ------------------------------------------------------------------------------------------
# Sharding


def test_ace_and_class_balanced_on_a_batch_sharded_explicit_mesh_equal_unsharded():
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(3, 16, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, 16).astype(np.int32)
    masks = ace_losses.ace_split(np.sort(rng.integers(1, 100, 10))[::-1], (0.4, 0.1))
    expert = np.flatnonzero(masks[2])

    def fn(z, y):
        return (ace_losses.ace_loss(z, y, target_masks=masks),
                ace_losses.ace_expert_losses(z, y, target_masks=masks),
                cbe_losses.outlier_exposure_loss(z[0][:, expert], y, in_expert_mask=masks[2]),
                cbe_losses.reject_class_labels(y, masks[1]),
                cbe_losses.reject_logit_correction(z[1], open_ratio=16))

    z = jax.device_put(logits, NamedSharding(mesh, P(None, "data")))
    y = jax.device_put(labels, NamedSharding(mesh, P("data")))
    with jax.set_mesh(mesh):
        sharded = jax.jit(fn)(z, y)
        grads = jax.jit(jax.grad(lambda z, y: fn(z, y)[0] + fn(z, y)[2]))(z, y)
    for a, b in zip(sharded, fn(logits, labels)):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(
        grads, jax.grad(lambda z: fn(z, labels)[0] + fn(z, labels)[2])(logits), rtol=1e-5,
        atol=1e-8)
