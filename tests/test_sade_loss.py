"""SADE's diverse-expert loss (`ltx.methods.sade.loss`) against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import np_log_softmax as _np_log_softmax, np_ce as _np_ce
from ltx import losses
from ltx.methods.ala_moe import loss as ala_losses
from ltx.methods.sade import loss as sade_losses

EPS = 1e-9  # Inside the logs of the official SADE code.


def _np_mirrored_prior(counts):
    """pi_inv[c] = prior of the class whose ascending rank mirrors c's (ties by class index)."""
    prior = np.asarray(counts, np.float64) / np.sum(counts)
    num_classes = len(prior)
    rank = [sum(prior[d] < prior[c] or (prior[d] == prior[c] and d < c)
                for d in range(num_classes)) for c in range(num_classes)]
    class_at_rank = {r: c for c, r in enumerate(rank)}
    return np.array([prior[class_at_rank[num_classes - 1 - rank[c]]]
                     for c in range(num_classes)])


def _np_sade(expert_logits, labels, counts, tau):
    prior = np.asarray(counts, np.float64) / np.sum(counts)
    log_pi = np.log(prior + EPS)
    log_inv = np.log(_np_mirrored_prior(counts) + EPS)
    z = np.asarray(expert_logits, np.float64)
    return (_np_ce(z[0], labels) + _np_ce(z[1] + log_pi, labels)
            + _np_ce(z[2] + log_pi - tau * log_inv, labels))


def _exponential_counts(num_classes, ratio=100.0, head=500.0):
    """The CIFAR-LT profile before integer truncation: prior_c * prior_{C-1-c} is constant."""
    return head * (1.0 / ratio) ** (np.arange(num_classes) / (num_classes - 1.0))


# ------------------------------------------------------------------------------------------
# SADE


def test_sade_inverse_prior_mirrors_ranks_by_hand():
    # prior (.1, .4, .2, .3): ascending ranks (0, 3, 1, 2) -> mirrored ranks (3, 0, 2, 1).
    np.testing.assert_allclose(sade_losses.sade_inverse_prior([10, 40, 20, 30]), [.4, .1, .3, .2],
                               rtol=1e-6)
    # Tied tail classes: class 0 ranks first (lower index) and receives the head's prior.
    np.testing.assert_allclose(sade_losses.sade_inverse_prior([5, 5, 20, 40]),
                               np.array([40, 20, 5, 5]) / 70, rtol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 7, 100])
def test_sade_inverse_prior_matches_rank_counting(num_classes):
    rng = np.random.default_rng(num_classes)
    counts = rng.integers(0, 20, num_classes)  # Many ties and some empty classes.
    counts[0] = 50
    got = sade_losses.sade_inverse_prior(counts)
    np.testing.assert_allclose(got, _np_mirrored_prior(counts), rtol=1e-6)
    np.testing.assert_allclose(np.sort(got), np.sort(counts / counts.sum()), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, classes, scale", [(1, 2, 1.0), (9, 10, 30.0), (40, 100, 1e3)])
def test_sade_matches_numpy(dtype, batch, classes, scale):
    rng = np.random.default_rng(batch + classes)
    logits = rng.normal(size=(3, batch, classes)) * scale
    counts = rng.integers(0, 300, classes)
    counts[-1] = 1
    labels = rng.integers(0, max(classes // 2, 1), batch)  # Upper half of the classes absent.
    for tau in (2.0, 1.0):
        with jax.enable_x64(dtype == np.float64):
            got = sade_losses.sade_loss(jnp.asarray(logits, dtype), labels, class_counts=counts,
                                        tau=tau)
            assert got.dtype == dtype  # float32 at least: f32/f64 kept.
        np.testing.assert_allclose(got, _np_sade(logits, labels, counts, tau), rtol=2e-5)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_sade_experts_are_ce_la_and_la_with_tau_plus_one_on_an_exponential_profile(tau):
    rng = np.random.default_rng(3)
    counts = _exponential_counts(20)
    logits = rng.normal(size=(3, 32, 20)).astype(np.float32) * 5
    labels = rng.integers(0, 20, 32)
    expected = (losses.cross_entropy(logits[0], labels)
                + losses.logit_adjusted_loss(logits[1], labels, class_counts=counts, tau=1.0)
                + losses.logit_adjusted_loss(logits[2], labels, class_counts=counts,
                                             tau=1.0 + tau))
    got = sade_losses.sade_loss(logits, labels, class_counts=counts, tau=tau)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Not BalPoE's tau = 2 expert (LA with tau = 2): the mirrored prior tilts further.
    balpoe = (losses.cross_entropy(logits[0], labels)
              + losses.logit_adjusted_loss(logits[1], labels, class_counts=counts, tau=1.0)
              + losses.logit_adjusted_loss(logits[2], labels, class_counts=counts, tau=tau))
    assert abs(float(got) - float(balpoe)) > 1e-2


def test_sade_is_a_sum_over_experts():
    # Uniform counts: every bias is a constant, so each expert's CE on zero logits is log C.
    got = sade_losses.sade_loss(np.zeros((3, 4, 5), np.float32), np.arange(4), class_counts=[7] * 5)
    np.testing.assert_allclose(got, 3 * np.log(5), rtol=1e-6)


def test_sade_rejects_bad_input():
    z, y, n = np.zeros((3, 4, 5), np.float32), np.arange(4), np.ones(5)
    with pytest.raises(ValueError, match=r"\[3, B, C\]"):
        sade_losses.sade_loss(z[0], y, class_counts=n)
    with pytest.raises(ValueError, match="2 experts; SADE's loss expects exactly 3"):
        sade_losses.sade_loss(z[:2], y, class_counts=n)
    with pytest.raises(ValueError, match=r"sade_loss: labels must be in \[0, 5\), got \[5\]"):
        sade_losses.sade_loss(z, np.array([0, 1, 5, 2]), class_counts=n)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\), got \[-1\]"):
        sade_losses.sade_loss(z, np.array([0, 1, -1, 2]), class_counts=n)
    with pytest.raises(ValueError, match="B = 4"):
        sade_losses.sade_loss(z, np.arange(3), class_counts=n)
    with pytest.raises(ValueError, match="integer class ids"):
        sade_losses.sade_loss(z, np.arange(4.0), class_counts=n)
    with pytest.raises(ValueError, match=r"class_counts must be finite and non-negative, "
                                         r"got \[-1.0\] for classes \[2\]"):
        sade_losses.sade_loss(z, y, class_counts=[1, 1, -1, 1, 1])
    with pytest.raises(ValueError, match="class_counts has 4 entries but the logits have C = 5"):
        sade_losses.sade_loss(z, y, class_counts=np.ones(4))
    with pytest.raises(ValueError, match="class_counts must have a positive sum"):
        sade_losses.sade_loss(z, y, class_counts=np.zeros(5))


# ------------------------------------------------------------------------------------------
# Sharding


def test_sade_and_ala_on_a_batch_sharded_explicit_mesh_equal_unsharded():
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    rng = np.random.default_rng(7)
    logits = (30 * rng.uniform(-1, 1, (3, 16, 10))).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    counts = rng.integers(1, 100, 10)
    weights = rng.uniform(0.5, 2, 10).astype(np.float32)

    def fn(z, y):
        return (sade_losses.sade_loss(z, y, class_counts=counts),
                ala_losses.ala_loss(z[0], y, class_counts=counts, class_weights=weights),
                ala_losses.ala_loss(z, y, class_counts=counts))

    z = jax.device_put(logits, NamedSharding(mesh, P(None, "data")))
    y = jax.device_put(labels, NamedSharding(mesh, P("data")))
    with jax.set_mesh(mesh):
        sharded = jax.jit(fn)(z, y)
        grads = jax.jit(jax.grad(lambda z, y: fn(z, y)[1]))(z, y)
    expected = fn(logits, labels)
    for a, b in zip(sharded, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(grads, jax.grad(lambda z: fn(z, labels)[1])(logits), rtol=1e-5,
                               atol=1e-8)
