"""RIDE's router cascade (`ltx.methods.ride.cascade`) against a NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx import fusion
from ltx.methods.ride import cascade as ride_cascade


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _np_ride_cascade(z, r, threshold):
    num_experts, batch, _ = z.shape
    out = np.zeros(z.shape[1:])
    used = np.zeros(batch, np.int32)
    for b in range(batch):
        total, n = z[0, b].astype(np.float64), 1
        for i in range(num_experts - 1):
            if not _np_sigmoid(r[i, b]) > threshold:
                break
            total = total + z[i + 1, b]
            n += 1
        out[b], used[b] = total / n, n
    return out, used


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_ride_cascade_matches_a_loop(threshold):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(4, 64, 5)).astype(np.float32)
    r = rng.normal(size=(3, 64)).astype(np.float32) * 2
    expected, used = _np_ride_cascade(z, r, threshold)
    out, num_used = ride_cascade.ride_cascade(z, r, threshold)
    assert num_used.dtype == jnp.int32
    np.testing.assert_array_equal(num_used, used)
    assert len(set(used.tolist())) >= 3  # The data exercise several depths.
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    jitted = jax.jit(ride_cascade.ride_cascade)(z, r, threshold)
    np.testing.assert_array_equal(jitted[1], used)


def test_ride_cascade_limits_and_single_expert():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(3, 8, 4)).astype(np.float32)
    r = rng.normal(size=(2, 8)).astype(np.float32) * 50  # sigmoid saturates to 0 / 1 in float32.
    out, used = ride_cascade.ride_cascade(z, r, 0.0)
    np.testing.assert_array_equal(used, 3)
    np.testing.assert_allclose(out, fusion.logit_mean(z), atol=1e-6)
    out, used = ride_cascade.ride_cascade(z, r, 1.0)
    np.testing.assert_array_equal(used, 1)
    np.testing.assert_allclose(out, z[0], atol=1e-7)
    out, used = ride_cascade.ride_cascade(z[:1], np.zeros((0, 8), np.float32))
    np.testing.assert_array_equal(used, 1)
    np.testing.assert_allclose(out, z[0], atol=1e-7)
    with pytest.raises(ValueError,
                       match=r"router_logits has shape \(3, 8\); expected \[E - 1, B\]"):
        ride_cascade.ride_cascade(z, np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\], got 1.5"):
        ride_cascade.ride_cascade(z, r, 1.5)
