"""Cross-entropy, logit adjustment and BalPoE's gLA against NumPy references from the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import np_log_softmax as _np_log_softmax
from ltx import losses
from ltx.methods.sade import loss as sade_losses
from ltx.methods.ride import loss as ride_losses
from ltx.methods.cbe import loss as cbe_losses
from ltx.methods.ala_moe import loss as ala_losses
from ltx.methods.ace import loss as ace_losses


def _np_ce(logits, labels, weights=None):
    nll = -_np_log_softmax(logits.astype(np.float64))[np.arange(len(labels)), labels]
    if weights is None:
        return nll.mean()
    w = weights[labels]
    return (w * nll).sum() / w.sum()


def _np_gla(expert_logits, labels, counts, lambdas):
    prior = counts / counts.sum()
    return np.mean([_np_ce(z + (1 - lam) * np.log(prior + 1e-9), labels)
                    for z, lam in zip(expert_logits, lambdas)])


@pytest.mark.parametrize("batch, classes", [(1, 2), (7, 10), (64, 100)])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
def test_cross_entropy_matches_numpy(batch, classes, scale):
    rng = np.random.default_rng(batch * classes)
    logits = (rng.normal(size=(batch, classes)) * scale).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    weights = rng.uniform(0.1, 5, classes)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), _np_ce(logits, labels),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, class_weights=weights),
                               _np_ce(logits, labels, weights), rtol=1e-5, atol=1e-4)


def test_weighted_cross_entropy_divides_by_target_weight_sum_not_batch():
    logits = np.zeros((2, 3), np.float32)  # Every sample's CE is log 3.
    labels = np.array([0, 2])
    weights = np.array([1.0, 7.0, 3.0])
    # PyTorch: (1 * log3 + 3 * log3) / (1 + 3) = log 3; dividing by B would give 2 log 3.
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, class_weights=weights),
                               np.log(3), rtol=1e-6)


def test_gla_with_lambda_one_is_cross_entropy_and_zero_is_logit_adjustment():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 32, 10)).astype(np.float32) * 5
    labels = rng.integers(0, 10, 32)
    counts = np.array([500, 300, 200, 100, 60, 30, 20, 10, 5, 2])
    np.testing.assert_allclose(losses.gla_loss(logits, labels, class_counts=counts, lambdas=[1.0]),
                               losses.cross_entropy(logits[0], labels), rtol=1e-6)
    np.testing.assert_allclose(losses.gla_loss(logits, labels, class_counts=counts, lambdas=[0.0]),
                               losses.logit_adjusted_loss(logits[0], labels, class_counts=counts),
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gla_matches_numpy_with_absent_classes(dtype):
    rng = np.random.default_rng(1)
    counts = np.array([200, 90, 40, 18, 8, 3])
    logits = rng.normal(size=(3, 16, 6)) * 10
    labels = rng.choice([0, 2, 5], 16)  # Classes 1, 3 and 4 absent from the batch.
    lambdas = (1.0, 0.0, -1.0)
    with jax.enable_x64(dtype == np.float64):
        got = losses.gla_loss(jnp.asarray(logits, dtype), labels, class_counts=counts,
                              lambdas=lambdas)
        # Losses compute in promote_types(input, float32): float32 stays, float64 stays.
        assert got.dtype == jnp.promote_types(dtype, jnp.float32) == dtype
    np.testing.assert_allclose(got, _np_gla(logits, labels, counts, lambdas), rtol=1e-5)


def test_gla_is_mean_not_sum_over_experts():
    logits = np.zeros((3, 4, 5), np.float32)
    labels = np.arange(4)
    counts = np.full(5, 10)  # Uniform prior: every bias is a constant, every expert gives log 5.
    np.testing.assert_allclose(
        losses.gla_loss(logits, labels, class_counts=counts, lambdas=(1, 0, -1)), np.log(5),
        rtol=1e-6)


def test_gla_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[E, B, C\]"):
        losses.gla_loss(np.zeros((4, 5)), np.zeros(4, int), class_counts=np.ones(5), lambdas=[1])
    with pytest.raises(ValueError, match="2 lambdas for 3 experts"):
        losses.gla_loss(np.zeros((3, 4, 5)), np.zeros(4, int), class_counts=np.ones(5),
                        lambdas=[1, 0])


Z3, Y4, N5 = np.zeros((3, 4, 5), np.float32), np.arange(4), np.ones(5)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.cross_entropy(Z3[0], np.array([0, 1, 5, 2])),
     r"cross_entropy: labels must be in \[0, 5\), got \[5\]"),
    (lambda: losses.cross_entropy(Z3[0], np.array([0, -1, 2, 2])),
     r"cross_entropy: labels must be in \[0, 5\), got \[-1\]"),
    (lambda: losses.cross_entropy(Z3[0], np.arange(3)),
     r"cross_entropy: labels must be \[B\] with B = 4"),
    (lambda: losses.cross_entropy(Z3[0], np.arange(4.0)), "labels must be integer class ids"),
    (lambda: losses.cross_entropy(np.zeros(5), np.zeros(1, int)),
     r"cross_entropy: logits must be \[\.\.\., B, C\], got shape \(5,\)"),
    (lambda: losses.cross_entropy(Z3[0], Y4, class_weights=np.ones(4)),
     r"cross_entropy: class_weights must be \[C\] = \[5\], got shape \(4,\)"),
    (lambda: losses.gla_loss(Z3, np.array([0, 1, 7, 2]), class_counts=N5, lambdas=(1, 0, -1)),
     r"gla_loss: labels must be in \[0, 5\), got \[7\]"),
    (lambda: losses.gla_loss(Z3, np.arange(5), class_counts=N5, lambdas=(1, 0, -1)),
     r"gla_loss: labels must be \[B\] with B = 4"),
    (lambda: losses.gla_loss(Z3, Y4, class_counts=[3, 2, -1, 1, 1], lambdas=(1, 0, -1)),
     r"gla_loss: class_counts must be finite and non-negative, got \[-1.0\] for classes \[2\]"),
    (lambda: losses.gla_loss(Z3, Y4, class_counts=np.ones(6), lambdas=(1, 0, -1)),
     "gla_loss: class_counts has 6 entries but the logits have C = 5 classes"),
    (lambda: losses.logit_adjusted_loss(Z3[0], np.array([0, 9, 1, 2]), class_counts=N5),
     r"logit_adjusted_loss: labels must be in \[0, 5\), got \[9\]"),
    (lambda: losses.logit_adjusted_loss(Z3[0], Y4, class_counts=[1, -2, 1, 1, 1]),
     "logit_adjusted_loss: class_counts must be finite and non-negative"),
    (lambda: losses.log_prior([1, -2, 1]), "log_prior: class_counts must be finite"),
    (lambda: losses.log_prior([0, 0]), "log_prior: class_counts must have a positive sum"),
])
def test_cross_entropy_and_logit_adjustment_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_label_range_is_only_checked_when_concrete():
    fn = jax.jit(lambda y: losses.gla_loss(Z3, y, class_counts=N5, lambdas=(1, 0, -1)))
    assert np.isfinite(fn(jnp.array([0, 1, 2, 5])))  # Out-of-range one-hot rows are all zero.


_B, _C = 4, 5
_LOSSES = {  # name: loss of (logits [3, B, C], labels [B]) in the logits' dtype.
    "cross_entropy": lambda z, y: losses.cross_entropy(z[0], y, class_weights=np.ones(_C)),
    "logit_adjusted_loss": lambda z, y: losses.logit_adjusted_loss(z[0], y, class_counts=N5),
    "gla_loss": lambda z, y: losses.gla_loss(z, y, class_counts=N5, lambdas=(1, 0, -1)),
    "sade_loss": lambda z, y: sade_losses.sade_loss(z, y, class_counts=N5),
    "ala_loss": lambda z, y: ala_losses.ala_loss(z[0], y, class_counts=N5),
    "ace_loss": lambda z, y: ace_losses.ace_loss(z, y, target_masks=np.arange(_C) >= np.array([[0], [2], [3]])),
    "focal_loss": lambda z, y: losses.focal_loss(z[0], y, gamma=1.0),
    "ldam_loss": lambda z, y: losses.ldam_loss(z[0], y, class_counts=N5),
    "ride_loss": lambda z, y: ride_losses.ride_loss(z, y, class_counts=N5, reweighting=True),
    "outlier_exposure_loss": lambda z, y: cbe_losses.outlier_exposure_loss(
        z[0, :, :3], y, in_expert_mask=np.arange(_C) < 3),
}


@pytest.mark.parametrize("name", sorted(_LOSSES))
def test_losses_compute_in_float32_at_least(name):
    """bfloat16/float16 inputs give a float32 loss; float32 and float64 (x64) keep their dtype."""
    logits = np.random.default_rng(3).normal(size=(3, _B, _C))
    labels = np.arange(_B)
    for dtype in (jnp.bfloat16, jnp.float16):
        assert _LOSSES[name](jnp.asarray(logits, dtype), labels).dtype == jnp.float32, dtype
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            assert _LOSSES[name](jnp.asarray(logits, dtype), labels).dtype == dtype, dtype


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_losses_on_a_batch_sharded_mesh_equal_unsharded(axis_type):
    mesh = jax.make_mesh((4,), ("data",),
                         axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 16, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    counts = rng.integers(1, 100, 10)
    weights = rng.uniform(0.5, 2, 10).astype(np.float32)

    def fn(z, y):
        return (losses.gla_loss(z, y, class_counts=counts, lambdas=(1, 0, -1)),
                losses.cross_entropy(z[0], y, class_weights=weights))

    z = jax.device_put(logits, NamedSharding(mesh, P(None, "data")))
    y = jax.device_put(labels, NamedSharding(mesh, P("data")))
    with jax.set_mesh(mesh):
        sharded = jax.jit(fn)(z, y)
    for a, b in zip(sharded, fn(logits, labels)):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_prior_correction_removes_the_training_prior_for_unbalanced_lambdas():
    import ml_collections

    from ltx import methods

    counts = np.array([60, 30, 10])
    pi, q = counts / counts.sum(), np.array([0.2, 0.3, 0.5])
    logits = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    ce = methods.build(ml_collections.ConfigDict({"name": "balpoe", "lambdas": (1.0,)}), counts)
    balanced = methods.build(ml_collections.ConfigDict({"name": "balpoe",
                                                        "lambdas": (1.0, 0.0, -1.0)}), counts)
    # CE's logits fit the training prior: swapping in q means adding log q - log pi.
    np.testing.assert_allclose(ce.correct_prior(logits, q), logits + np.log(q) - np.log(pi),
                               rtol=1e-5, atol=1e-5)
    # BalPoE's balanced lambdas: BalPoE's own correction, + log q.
    np.testing.assert_allclose(balanced.correct_prior(logits, q), logits + np.log(q),
                               rtol=1e-5, atol=1e-5)
