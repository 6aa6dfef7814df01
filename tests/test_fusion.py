"""Shared fusions of expert outputs (`ltx.fusion.ensemble`) against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx import fusion


def _np_log_softmax(z, axis=-1):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


# ------------------------------------------------------------------------------------------
# Full-width ensembles.
# ------------------------------------------------------------------------------------------


def test_logit_mean_and_prob_mean_match_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
    np.testing.assert_allclose(fusion.logit_mean(z), (z[0] + z[1] + z[2]) / 3, rtol=1e-6,
                               atol=1e-6)
    probs = np.exp(_np_log_softmax(z))
    expected = np.log((probs[0] + probs[1] + probs[2]) / 3)
    out = fusion.prob_mean(z)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Extreme logits: still finite and normalized (log domain).
    big = fusion.prob_mean(z * 1000)
    assert np.isfinite(big).all()
    np.testing.assert_allclose(jax.nn.logsumexp(big, axis=-1), 0.0, atol=1e-5)
    # bfloat16 inputs are promoted.
    assert fusion.logit_mean(z.astype(jnp.bfloat16)).dtype == jnp.float32


def test_router_weighted_matches_numpy():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 6, 5)).astype(np.float32)
    w = np.asarray(jax.nn.softmax(rng.normal(size=(6, 4)), axis=-1), np.float32)
    expected = np.zeros((6, 5))
    for b in range(6):
        for k in range(4):
            expected[b] += w[b, k] * z[k, b]
    np.testing.assert_allclose(fusion.router_weighted(z, w), expected, rtol=1e-5, atol=1e-6)
    # One-hot weights pick that expert.
    onehot = np.eye(4, dtype=np.float32)[[2] * 6]
    np.testing.assert_allclose(fusion.router_weighted(z, onehot), z[2], atol=1e-6)
    with pytest.raises(ValueError, match=r"router_weighted: router_weights has shape \(4, 6\)"):
        fusion.router_weighted(z, w.T)
