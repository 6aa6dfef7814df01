"""ACE's group average and weight-norm rescaling (`ltx.methods.ace.fusion`) against NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx.data.long_tail import long_tail_counts
from ltx.methods.ace import fusion as ace_fusion
from ltx.methods.ace import loss as ace_losses


def test_group_average_is_aces_group_formula_with_nested_masks():
    counts = long_tail_counts(500, 20, 100)
    masks = ace_losses.ace_split(counts, (0.3, 0.03))
    assert masks[0].all() and (masks[2] <= masks[1]).all() and masks[2].any()
    many, medium, few = ~masks[1], masks[1] & ~masks[2], masks[2]
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 4, 20)).astype(np.float32)
    m, f = 1.7, 2.9
    expected = np.where(many, z[0], np.where(medium, (z[0] + m * z[1]) / 2,
                                             (z[0] + m * z[1] + f * z[2]) / 3))
    out = ace_fusion.group_average(z, masks, np.array([1.0, m, f]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # Default scales are ones.
    np.testing.assert_allclose(ace_fusion.group_average(z, masks),
                               ace_fusion.group_average(z, masks, jnp.ones(3)), atol=1e-7)


def test_group_average_matches_a_loop_with_arbitrary_masks():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 3, 6)).astype(np.float32)
    masks = rng.random((4, 6)) < 0.5
    masks[0, 0] = True
    masks[:, ~masks.any(0)] = True  # Every class covered.
    scales = rng.uniform(0.5, 2.0, 4)
    expected = np.zeros((3, 6))
    for c in range(6):
        ks = [k for k in range(4) if masks[k, c]]
        expected[:, c] = sum(scales[k] * z[k, :, c] for k in ks) / len(ks)
    np.testing.assert_allclose(ace_fusion.group_average(z, masks, scales), expected, rtol=1e-5,
                               atol=1e-6)
    jitted = jax.jit(lambda x, s: ace_fusion.group_average(x, masks, s))
    np.testing.assert_allclose(jitted(z, scales), expected, rtol=1e-5, atol=1e-6)
    bad = masks.copy()
    bad[:, 4] = False
    with pytest.raises(ValueError, match=r"group_average: classes \[4\] are targeted by no expert"):
        ace_fusion.group_average(z, bad)
    with pytest.raises(ValueError, match=r"scales has shape \(3,\)"):
        ace_fusion.group_average(z, masks, np.ones(3))


def test_ace_rescale_factors_match_numpy():
    rng = np.random.default_rng(4)
    kernels = rng.normal(size=(3, 8, 10)).astype(np.float32)
    kernels[2] *= 3.0
    masks = np.zeros((3, 10), bool)
    masks[0] = True
    masks[1, 4:] = True
    masks[2, 7:] = True
    norms = np.linalg.norm(kernels.astype(np.float64), axis=1)  # [E, C]
    expected = [norms[0].mean() / norms[k][masks[k]].mean() for k in range(3)]
    out = ace_fusion.ace_rescale_factors(kernels, masks)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out[0] == pytest.approx(1.0, abs=1e-6)
    # Scaling expert 1's kernel by 4 divides its factor by 4.
    scaled = kernels.copy()
    scaled[1] *= 4.0
    np.testing.assert_allclose(ace_fusion.ace_rescale_factors(scaled, masks)[1], expected[1] / 4,
                               rtol=1e-5)
    bad = masks.copy()
    bad[0, 3] = False
    with pytest.raises(ValueError, match=r"target_masks\[0\] misses classes \[3\]"):
        ace_fusion.ace_rescale_factors(kernels, bad)
