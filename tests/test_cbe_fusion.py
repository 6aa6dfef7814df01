"""Class-balanced experts' fusions (`ltx.methods.cbe.fusion`) against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx.methods.cbe import fusion as cbe_fusion


def _np_log_softmax(z, axis=-1):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


MASKS = np.zeros((3, 9), bool)
MASKS[0, [0, 2, 5, 7]] = True
MASKS[1, [1, 4, 8]] = True
MASKS[2, [3, 6]] = True
OWNER = np.argmax(MASKS, axis=0)


def _experts(num, seed, *, scale=1.5, signal=0.0, reject=True, masks=MASKS):
    """Random local logits; with signal > 0 the owner of each label is confident and right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, masks.shape[1], num)
    owner = np.argmax(masks, axis=0)
    zs = []
    for k, mask in enumerate(masks):
        own = np.flatnonzero(mask)
        z = rng.normal(size=(num, own.size + int(reject))) * scale
        mine = owner[labels] == k
        if signal:
            local = np.searchsorted(own, labels[mine])
            z[np.flatnonzero(mine), local] += signal
            if reject:
                z[mine, -1] -= signal
                z[~mine, -1] += signal
        zs.append(z.astype(np.float32))
    return zs, labels.astype(np.int32)


def _np_local_log_probs(zs, ratios, reject):
    out = []
    for z, r in zip(zs, ratios):
        z = np.asarray(z, np.float64).copy()
        if reject:
            z[:, -1] += np.log((1 + r) / 2)
        out.append(_np_log_softmax(z))
    return out


def _np_distributions(zs, masks, ratios, reject):
    num = zs[0].shape[0]
    out = np.zeros((len(zs), num, masks.shape[1]))
    for k, (lp, mask) in enumerate(zip(_np_local_log_probs(zs, ratios, reject), masks)):
        own = np.flatnonzero(mask)
        p = np.exp(lp)
        for j, c in enumerate(own):
            out[k, :, c] = p[:, j]
        if reject:
            for c in np.flatnonzero(~mask):
                out[k, :, c] = p[:, -1] / (~mask).sum()
    return out


@pytest.mark.parametrize("reject", [True, False])
def test_expert_distributions_and_soft_voting_match_numpy(reject):
    zs, _ = _experts(40, 7, reject=reject)
    ratios = [16.0, 8.0, 4.0]
    expected = _np_distributions(zs, MASKS, ratios, reject)
    dists = cbe_fusion.expert_distributions(zs, MASKS, reject=reject, open_ratios=ratios)
    assert dists.shape == (3, 40, 9)
    np.testing.assert_allclose(dists, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dists.sum(-1), 1.0, atol=1e-5)
    if not reject:
        outside = ~np.broadcast_to(MASKS[:, None], dists.shape)
        assert (np.asarray(dists)[outside] == 0).all()
    sv = cbe_fusion.soft_voting(zs, MASKS, reject=reject, open_ratios=np.array(ratios))
    np.testing.assert_allclose(sv, np.log(expected.mean(0)), rtol=1e-5, atol=1e-5)
    jitted = jax.jit(lambda x, r: cbe_fusion.soft_voting(x, MASKS, reject=reject, open_ratios=r))
    np.testing.assert_allclose(jitted(zs, jnp.asarray(ratios)), sv, atol=1e-6)


def _np_kl_objective(zs, masks, ratios, log_q):
    q = np.exp(np.asarray(log_q, np.float64))
    total = np.zeros(q.shape[0])
    for lp, mask in zip(_np_local_log_probs(zs, ratios, True), masks):
        p = np.exp(lp)
        collapsed = np.concatenate([q[:, mask], q[:, ~mask].sum(1, keepdims=True)], axis=1)
        total += np.sum(p * (lp - np.log(collapsed)), axis=1)
    return total


def _np_em_step(zs, masks, ratios, log_q):
    q = np.exp(np.asarray(log_q, np.float64))
    new = np.zeros_like(q)
    for lp, mask in zip(_np_local_log_probs(zs, ratios, True), masks):
        p = np.exp(lp)
        resp = np.zeros_like(q)
        resp[:, mask] = p[:, :-1]
        resp[:, ~mask] = p[:, -1:] * q[:, ~mask] / q[:, ~mask].sum(1, keepdims=True)
        new += resp / len(zs)
    return new


def _np_kl_optimum(zs, masks, ratios):
    """Exact minimizer: within expert k's classes q is proportional to p_k, and the group masses
    m solve max sum_k s_k log m_k + r_k log(1 - m_k) s.t. sum m = 1 (s_k = 1 - r_k), i.e.
    s_k / m_k - r_k / (1 - m_k) = lambda, found by nested bisection."""
    probs = [np.exp(lp) for lp in _np_local_log_probs(zs, ratios, True)]
    r = np.stack([p[:, -1] for p in probs], 1)  # [N, E]
    s = 1.0 - r

    def masses(lam):  # m_k(lambda), decreasing in lambda; g(m) = s/m - r/(1-m) is decreasing.
        lo, hi = np.zeros_like(s), np.ones_like(s)
        for _ in range(100):
            mid = (lo + hi) / 2
            g = s / mid - r / (1 - mid)
            lo, hi = np.where(g > lam[:, None], mid, lo), np.where(g > lam[:, None], hi, mid)
        return (lo + hi) / 2

    lo, hi = np.full(len(s), -1e6), np.full(len(s), 1e6)
    for _ in range(200):
        mid = (lo + hi) / 2
        too_much = masses(mid).sum(1) > 1
        lo, hi = np.where(too_much, mid, lo), np.where(too_much, hi, mid)
    m = masses((lo + hi) / 2)
    q = np.zeros((len(s), masks.shape[1]))
    for k, (p, mask) in enumerate(zip(probs, masks)):
        q[:, mask] = m[:, k:k + 1] * p[:, :-1] / s[:, k:k + 1]
    return q / q.sum(1, keepdims=True)


def test_kl_fusion_decreases_the_objective_and_is_a_fixed_point():
    zs, _ = _experts(64, 8, signal=3.0)
    ratios = 16
    sv = cbe_fusion.soft_voting(zs, MASKS)
    kl = cbe_fusion.kl_fusion(zs, MASKS)
    np.testing.assert_allclose(jax.nn.logsumexp(kl, axis=-1), 0.0, atol=1e-5)
    uniform = np.full((64, 9), -np.log(9))
    objective = _np_kl_objective(zs, MASKS, [ratios] * 3, kl)
    assert (objective <= _np_kl_objective(zs, MASKS, [ratios] * 3, sv) + 1e-5).all()
    assert (objective <= _np_kl_objective(zs, MASKS, [ratios] * 3, uniform) + 1e-5).all()
    # Strictly better somewhere: EM moved away from the soft-voting start.
    assert (objective < _np_kl_objective(zs, MASKS, [ratios] * 3, sv) - 1e-3).any()
    # Fixed point: one more EM iteration (here and in NumPy) changes q by < 1e-5.
    again = cbe_fusion.kl_fusion(zs, MASKS, num_iterations=201)
    assert np.abs(np.exp(again) - np.exp(kl)).max() < 1e-5
    assert np.abs(_np_em_step(zs, MASKS, [ratios] * 3, kl) - np.exp(kl)).max() < 1e-5
    # Zero iterations is the soft-voting start; the first EM step from uniform is soft voting.
    np.testing.assert_allclose(cbe_fusion.kl_fusion(zs, MASKS, num_iterations=0), sv, atol=1e-6)
    np.testing.assert_allclose(np.log(_np_em_step(zs, MASKS, [ratios] * 3, uniform)), sv,
                               atol=1e-5)
    np.testing.assert_allclose(np.exp(kl), _np_kl_optimum(zs, MASKS, [ratios] * 3), atol=1e-4)


def test_kl_fusion_reaches_the_exact_optimum_on_random_experts():
    zs, _ = _experts(64, 9, scale=2.0)
    kl = jax.jit(lambda x: cbe_fusion.kl_fusion(x, MASKS, open_ratios=1))(zs)
    np.testing.assert_allclose(np.exp(kl), _np_kl_optimum(zs, MASKS, [1.0] * 3), atol=1e-4)
    with pytest.raises(ValueError,
                       match=r"kl_fusion: reject=False; .* needs experts with a reject"):
        cbe_fusion.kl_fusion(_experts(4, 0, reject=False)[0], MASKS, reject=False)
    with pytest.raises(ValueError, match=r"num_iterations must be an int >= 0, got -1"):
        cbe_fusion.kl_fusion(zs, MASKS, num_iterations=-1)


def _np_selection(zs, masks, ratios, reject):
    lps = _np_local_log_probs(zs, ratios, reject)
    num = zs[0].shape[0]
    if reject:
        chosen = np.argmin(np.stack([lp[:, -1] for lp in lps], 1), axis=1)
    else:
        chosen = np.argmax(np.stack([lp.max(1) for lp in lps], 1), axis=1)
    out = np.full((num, masks.shape[1]), -1e9)
    for n in range(num):
        k = chosen[n]
        own = np.flatnonzero(masks[k])
        out[n, own] = _np_log_softmax(zs[k][n, :own.size])
    return chosen, out


@pytest.mark.parametrize("reject", [True, False])
def test_expert_selection_matches_numpy(reject):
    zs, _ = _experts(50, 10, scale=2.0, reject=reject)
    chosen, expected = _np_selection(zs, MASKS, [16, 16, 16], reject)
    assert len(set(chosen.tolist())) == 3
    np.testing.assert_array_equal(cbe_fusion.selected_experts(zs, MASKS, reject=reject), chosen)
    out = cbe_fusion.expert_selection(zs, MASKS, reject=reject)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(jax.nn.logsumexp(out, axis=-1), 0.0, atol=1e-5)
    assert (MASKS[chosen, np.argmax(out, axis=-1)]).all()  # Predicts one of its own classes.


def test_oracle_is_perfect_when_every_expert_ranks_the_truth_first():
    zs, labels = _experts(60, 11, scale=1.0)
    # Each expert's best own class is the label (when it owns it); the reject logit is huge.
    for k, mask in enumerate(MASKS):
        own = np.flatnonzero(mask)
        mine = np.flatnonzero(OWNER[labels] == k)
        zs[k][mine, np.searchsorted(own, labels[mine])] += 10.0
        zs[k][:, -1] = 50.0
    out = cbe_fusion.oracle(zs, MASKS, labels)
    np.testing.assert_array_equal(np.argmax(out, -1), labels)
    np.testing.assert_allclose(jax.nn.logsumexp(out, axis=-1), 0.0, atol=1e-5)
    assert np.asarray(out)[~MASKS[OWNER[labels]]].max() == cbe_fusion.LOG_ZERO
    # jit, and labels out of range.
    np.testing.assert_allclose(
        jax.jit(lambda x, y: cbe_fusion.oracle(x, MASKS, y))(zs, labels), out)
    with pytest.raises(ValueError, match=r"oracle: labels must be in \[0, 9\), got \[9\]"):
        cbe_fusion.oracle(zs, MASKS, np.where(np.arange(60) == 3, 9, labels).astype(np.int32))


def test_oracle_accuracy_bounds_every_other_fusion():
    train, train_labels = _experts(400, 12, scale=1.5, signal=1.0)
    test, labels = _experts(400, 13, scale=1.5, signal=1.0)
    correct_oracle = np.argmax(cbe_fusion.oracle(test, MASKS, labels), -1) == labels
    others = {
        "soft_voting": cbe_fusion.soft_voting(test, MASKS),
        "kl_fusion": cbe_fusion.kl_fusion(test, MASKS),
        "expert_selection": cbe_fusion.expert_selection(test, MASKS),
    }
    for name, out in others.items():
        correct = np.argmax(out, -1) == labels
        # A correct fusion prediction implies a correct oracle on that sample.
        assert not (correct & ~correct_oracle).any(), name
    params = cbe_fusion.fit_stacking(train, MASKS, train_labels, num_steps=200)
    others["stacking"] = cbe_fusion.apply_stacking(params, test, MASKS)
    cal = cbe_fusion.fit_joint_calibration(train, MASKS, train_labels, num_epochs=20)
    others["joint_calibration"] = cbe_fusion.apply_joint_calibration(cal, test, MASKS)
    for name, out in others.items():
        accuracy = np.mean(np.argmax(out, -1) == labels)
        assert correct_oracle.mean() >= accuracy, (name, accuracy, correct_oracle.mean())
        assert accuracy > 1 / 9 + 0.05, name  # Every fusion uses the signal.


def per_example_nll(log_probs, labels):
    lp = np.asarray(jax.nn.log_softmax(jnp.asarray(log_probs), axis=-1), np.float64)
    return -lp[np.arange(len(labels)), labels].mean()


def test_stacking_decreases_the_nll_and_fits_a_separable_problem():
    zs, labels = _experts(300, 14, scale=1.0, signal=1.5)
    zero = {"kernel": jnp.zeros((12, 9)), "bias": jnp.zeros(9)}
    nll_start = per_example_nll(cbe_fusion.apply_stacking(zero, zs, MASKS), labels)
    assert nll_start == pytest.approx(np.log(9), abs=1e-6)
    nlls = [per_example_nll(cbe_fusion.apply_stacking(
        cbe_fusion.fit_stacking(zs, MASKS, labels, num_steps=n), zs, MASKS), labels)
        for n in (20, 500)]
    assert nll_start > nlls[0] > nlls[1]
    # Separable: the owner is sure of the label, every other expert rejects.
    zs, labels = _experts(200, 15, scale=0.3, signal=8.0, reject=False)
    params = cbe_fusion.fit_stacking(zs, MASKS, labels, reject=False, learning_rate=0.1)
    logits = cbe_fusion.apply_stacking(params, zs, MASKS, reject=False)
    assert params["kernel"].shape == (9, 9)
    np.testing.assert_array_equal(np.argmax(logits, -1), labels)
    assert per_example_nll(logits, labels) < 0.05
    with pytest.raises(ValueError, match=r"apply_stacking: params have kernel \(12, 9\)"):
        cbe_fusion.apply_stacking(zero, zs, MASKS, reject=False)


def _np_joint_calibration(params, zs, masks, ratio):
    num = zs[0].shape[0]
    y = np.zeros((num, masks.shape[1]))
    for p, z, mask in zip(params, zs, masks):
        z = np.asarray(z, np.float64).copy()
        z[:, -1] -= np.log(2 / (1 + ratio))  # As jointCalibration.py writes it.
        probs = np.exp(_np_log_softmax(np.asarray(p["scale"]) * z + np.asarray(p["bias"])))
        y[:, mask] = probs[:, :-1]
    return np.log(y / y.sum(1, keepdims=True))


def test_joint_calibration_forward_matches_the_official_formula():
    zs, _ = _experts(30, 16)
    rng = np.random.default_rng(17)
    params = tuple({"scale": rng.uniform(0.5, 2, z.shape[1]).astype(np.float32),
                    "bias": rng.normal(size=z.shape[1]).astype(np.float32)} for z in zs)
    out = cbe_fusion.apply_joint_calibration(params, zs, MASKS, open_ratios=16)
    np.testing.assert_allclose(out, _np_joint_calibration(params, zs, MASKS, 16), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(jax.nn.logsumexp(out, axis=-1), 0.0, atol=1e-5)
    jitted = jax.jit(lambda p, x: cbe_fusion.apply_joint_calibration(p, x, MASKS))
    np.testing.assert_allclose(jitted(params, zs), out, atol=1e-6)
    with pytest.raises(ValueError, match=r"apply_joint_calibration: params must be .* \[5, 4, 3\]"):
        cbe_fusion.apply_joint_calibration(params[:2], zs, MASKS)


def test_joint_calibration_fit_reduces_the_nll_of_overconfident_experts():
    zs, labels = _experts(600, 18, scale=1.0, signal=1.0)
    zs = [z * 5.0 for z in zs]  # Miscalibrated: five times too confident.
    ones = tuple({"scale": np.ones(z.shape[1], np.float32), "bias": np.ones(z.shape[1], np.float32)}
                 for z in zs)
    before = per_example_nll(cbe_fusion.apply_joint_calibration(ones, zs, MASKS), labels)
    params = cbe_fusion.fit_joint_calibration(zs, MASKS, labels, num_epochs=40, seed=1)
    out = cbe_fusion.apply_joint_calibration(params, zs, MASKS)
    after = per_example_nll(out, labels)
    assert after < 0.7 * before, (before, after)
    np.testing.assert_allclose(jax.nn.logsumexp(out, axis=-1), 0.0, atol=1e-5)
    assert all(p["scale"].shape == (z.shape[1],) for p, z in zip(params, zs))
    assert np.mean([np.asarray(p["scale"]).mean() for p in params]) < 0.8  # Learned to cool down.
    # Deterministic given the seed; the last minibatch (600 = 2 * 256 + 88) is handled.
    again = cbe_fusion.fit_joint_calibration(zs, MASKS, labels, num_epochs=40, seed=1)
    np.testing.assert_allclose(again[0]["scale"], params[0]["scale"], atol=1e-6)


def test_class_balanced_fusions_reject_bad_inputs():
    zs, labels = _experts(10, 19)
    with pytest.raises(ValueError, match=r"soft_voting: expert_logits has 2 experts but masks "
                                         r"has E = 3 rows"):
        cbe_fusion.soft_voting(zs[:2], MASKS)
    with pytest.raises(ValueError, match=r"expert_logits\[1\] has 3 columns; masks\[1\] expects "
                                         r"K_k \+ 1 = 4"):
        cbe_fusion.soft_voting([zs[0], zs[1][:, :3], zs[2]], MASKS)
    with pytest.raises(ValueError, match=r"expert_logits\[0\] has 5 columns; .*K_k = 4"):
        cbe_fusion.expert_selection(zs, MASKS, reject=False)
    overlap = MASKS.copy()
    overlap[1, 0] = True
    with pytest.raises(ValueError, match=r"kl_fusion: classes \[0\] belong to more than one"):
        cbe_fusion.kl_fusion(zs, overlap)
    uncovered = MASKS.copy()
    uncovered[2, 6] = False
    with pytest.raises(ValueError,
                       match=r"expert_distributions: classes \[6\] belong to no expert"):
        cbe_fusion.expert_distributions(zs, uncovered)
    with pytest.raises(ValueError, match=r"fit_stacking: labels must be in \[0, 9\), got \[-1\]"):
        cbe_fusion.fit_stacking(zs, MASKS, np.where(np.arange(10) == 0, -1, labels))
    with pytest.raises(ValueError,
                       match=r"fit_joint_calibration: labels must be \[B\] with B = 10"):
        cbe_fusion.fit_joint_calibration(zs, MASKS, labels[:5])
    with pytest.raises(ValueError, match=r"open_ratios must be a finite number > 0, got -2"):
        cbe_fusion.soft_voting(zs, MASKS, open_ratios=-2)
    with pytest.raises(ValueError, match=r"open_ratios has shape \(2,\); expected a scalar or"):
        cbe_fusion.soft_voting(zs, MASKS, open_ratios=[16, 8])
    with pytest.raises(ValueError, match=r"expert_logits must be a list of E arrays"):
        cbe_fusion.soft_voting(np.zeros((3, 10, 5), np.float32), MASKS)
    with pytest.raises(ValueError, match=r"a single expert owns every class"):
        cbe_fusion.soft_voting([np.zeros((4, 10), np.float32)], np.ones((1, 9), bool))
    with pytest.raises(ValueError, match=r"expert_logits\[2\] has 7 samples but expert_logits\[0\]"
                                         r" has 10"):
        cbe_fusion.soft_voting([zs[0], zs[1], zs[2][:7]], MASKS)
    with pytest.raises(ValueError, match=r"masks must be a non-empty bool \[E, C\]"):
        cbe_fusion.soft_voting(zs, MASKS[0])
    with pytest.raises(ValueError, match=r"num_epochs must be an int >= 1, got 0"):
        cbe_fusion.fit_joint_calibration(zs, MASKS, labels, num_epochs=0)
    # Without a reject class a single expert is fine.
    single = cbe_fusion.soft_voting([np.zeros((4, 9), np.float32)], np.ones((1, 9), bool),
                                    reject=False)
    np.testing.assert_allclose(single, np.log(1 / 9), atol=1e-6)
