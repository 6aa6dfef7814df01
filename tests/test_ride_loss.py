"""RIDE loss and routing (`ltx.methods.ride.loss`) against NumPy references from the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import np_log_softmax as _np_log_softmax, np_softmax as _np_softmax, np_kl_batchmean as _np_kl_batchmean
from ltx import losses
from ltx.methods.ride import loss as ride_losses

CIFAR100_IR100 = np.array([int(500 * 0.01 ** (i / 99)) for i in range(100)])


def _np_temperatures(counts, t0, alpha):
    p = counts / counts.sum()
    t = len(counts) * p * alpha + 1 - alpha
    return t0 * t / t.max()


def _np_drw(counts, beta):
    w = (1 - beta) / (1 - beta ** counts.astype(np.float64))
    return w / w.sum() * len(counts)


def _np_ride(expert_logits, labels, counts, reweighting, max_m=0.5, s=30.0, t0=1.0, lam=-0.2,
             alpha=0.05, beta=0.9999):
    z = expert_logits.astype(np.float64)
    num_experts, batch, _ = z.shape
    rows = np.arange(batch)
    counts = np.asarray(counts, np.float64)
    margins = counts ** -0.25
    margins = margins * max_m / margins.max()
    if reweighting:
        weights = _np_drw(counts, beta)[labels]
        temp = _np_temperatures(counts, t0, alpha)
        temp_mean = temp.mean()
    else:
        weights, temp, temp_mean = np.ones(batch), t0, t0
    z_bar = z.mean(0)
    total = 0.0
    for k in range(num_experts):
        shifted = (z_bar if lam == 0 else z[k]).copy()  # Official quirk for lambda == 0.
        shifted[rows, labels] -= s * margins[labels]
        nll = -_np_log_softmax(shifted)[rows, labels]
        base = np.sum(weights * nll) / np.sum(weights)
        kl = _np_kl_batchmean(_np_log_softmax(z_bar / temp), _np_log_softmax(z[k] / temp))
        total += base + lam * temp_mean ** 2 * kl
    return total


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def _expert_case(experts, batch, classes, mult, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 500, classes)
    logits = rng.normal(size=(experts, batch, classes)) * mult
    pool = rng.choice(classes, max(1, classes // 2), replace=False)  # Absent classes.
    return logits, rng.choice(pool, batch), counts


def test_ride_temperatures_match_formula_and_cifar100_values():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 800, 31)
    for t0, alpha in [(1.0, 0.05), (2.0, 0.02), (0.5, 0.3)]:
        np.testing.assert_allclose(
            ride_losses.ride_temperatures(counts, base_temperature=t0, reweight_factor=alpha),
            _np_temperatures(counts.astype(np.float64), t0, alpha), rtol=1e-6)
    t = np.asarray(ride_losses.ride_temperatures(CIFAR100_IR100))
    assert t[0] == pytest.approx(1.0) and t[-1] == pytest.approx(0.807, abs=5e-4)
    assert t.mean() == pytest.approx(0.847, abs=5e-4)


# (experts, batch, classes, logit multiplier, lambda, T0)
RIDE_CASES = [(1, 1, 2, 30.0, -0.2, 1.0), (2, 7, 10, 10.0, -0.45, 1.0),
              (3, 32, 100, 30.0, 0.3, 2.5), (4, 16, 6, 1e3, -0.2, 1.0),
              (3, 8, 12, 10.0, 0.0, 1.5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", RIDE_CASES)
@pytest.mark.parametrize("reweighting", [False, True])
def test_ride_loss_matches_numpy(dtype, case, reweighting):
    experts, batch, classes, mult, lam, t0 = case
    logits, labels, counts = _expert_case(experts, batch, classes, mult, RIDE_CASES.index(case))
    logits = np.tanh(logits / mult) * 30 if mult == 30.0 else logits  # Cosine-like, and extreme.
    logits = logits.astype(dtype)
    kw = dict(max_margin=0.5, scale=30.0, base_temperature=t0, diversity_factor=lam,
              reweight_factor=0.05, beta=0.9999)
    with jax.enable_x64(dtype == np.float64):
        got = ride_losses.ride_loss(jnp.asarray(logits), labels, class_counts=counts,
                                    reweighting=reweighting, **kw)
        assert got.dtype == (jnp.float64 if dtype == np.float64 else jnp.float32)
    expected = _np_ride(logits, labels, counts, reweighting, 0.5, 30.0, t0, lam, 0.05, 0.9999)
    np.testing.assert_allclose(got, expected, **_tol(dtype))


@pytest.mark.parametrize("reweighting", [False, True])
@pytest.mark.parametrize("diversity", [0.0, -0.45])
def test_ride_with_one_expert_is_ldam(reweighting, diversity):
    logits, labels, counts = _expert_case(1, 32, 10, 10.0, seed=3)
    logits = logits.astype(np.float32)
    weights = losses.drw_class_weights(counts) if reweighting else None
    got = ride_losses.ride_loss(logits, labels, class_counts=counts, reweighting=reweighting,
                                diversity_factor=diversity, max_margin=0.4, scale=20.0)
    np.testing.assert_allclose(
        got, losses.ldam_loss(logits[0], labels, class_counts=counts, max_margin=0.4, scale=20.0,
                              class_weights=weights), rtol=1e-6)


@pytest.mark.parametrize("reweighting", [False, True])
def test_ride_with_zero_diversity_is_ldam_on_the_mean_logits_times_experts(reweighting):
    # RIDE's lambda == 0 quirk: each expert's LDAM term is computed on the ensemble mean.
    logits, labels, counts = _expert_case(3, 16, 10, 10.0, seed=4)
    logits = logits.astype(np.float32)
    weights = losses.drw_class_weights(counts) if reweighting else None
    got = ride_losses.ride_loss(logits, labels, class_counts=counts, reweighting=reweighting,
                                diversity_factor=0.0)
    ldam_mean = losses.ldam_loss(logits.mean(0), labels, class_counts=counts,
                                 class_weights=weights)
    np.testing.assert_allclose(got, 3 * ldam_mean, rtol=1e-6)
    per_expert = sum(losses.ldam_loss(z, labels, class_counts=counts, class_weights=weights)
                     for z in logits)
    assert abs(float(got) - float(per_expert)) > 1e-2


def _np_ride_grad(logits, labels, counts, reweighting, t0, lam, s, frozen_target=None):
    """Analytic gradient of ride_loss with the diversity target q = softmax(z_bar / T) treated
    as a constant (evaluated at `frozen_target` logits if given, else at `logits`):
    dl_k/dz_k = w_i (softmax(z~_k) - e_y) / sum w and dD_k/dz_k = T_bar^2 (p_k - q) / (B T)."""
    experts, batch, classes = logits.shape
    counts64 = counts.astype(np.float64)
    margins = counts64 ** -0.25
    margins *= 0.5 / margins.max()
    if reweighting:
        w = _np_drw(counts64, 0.9999)[labels]
        temp = _np_temperatures(counts64, t0, 0.05)
        temp_mean = temp.mean()
    else:
        w, temp, temp_mean = np.ones(batch), t0, t0
    onehot = np.eye(classes)[labels]
    target_logits = logits if frozen_target is None else frozen_target
    q = _np_softmax(target_logits.mean(0) / temp)
    grad = np.empty_like(logits)
    for k in range(experts):
        shifted = logits[k] - s * margins[labels][:, None] * onehot
        d_base = w[:, None] * (_np_softmax(shifted) - onehot) / w.sum()
        d_div = temp_mean ** 2 * (_np_softmax(logits[k] / temp) - q) / (batch * temp)
        grad[k] = d_base + lam * d_div
    return grad


@pytest.mark.parametrize("reweighting", [False, True])
def test_ride_diversity_target_is_stop_gradient(reweighting):
    """The target q = softmax(sg(z_bar) / T) is a constant for differentiation.

    To first order this is invisible in the summed loss: q is the normalised geometric mean of
    the experts' tempered distributions, the minimiser of sum_k KL(q || p_k), so the path through
    z_bar contributes exactly zero to the gradient (checked below by finite differences). The
    stop-gradient shows at second order: a Hessian-vector product must treat q as frozen.
    """
    experts, batch, classes, lam, t0, s = 3, 4, 5, -0.45, 1.5, 30.0
    logits, labels, counts = _expert_case(experts, batch, classes, 3.0, seed=5)
    direction = np.random.default_rng(12).normal(size=logits.shape)
    args = (labels, counts, reweighting, t0, lam, s)

    def loss(z):
        return ride_losses.ride_loss(z, labels, class_counts=counts, reweighting=reweighting,
                                     base_temperature=t0, diversity_factor=lam, scale=s)

    with jax.enable_x64(True):
        grad = np.asarray(jax.grad(loss)(jnp.asarray(logits)))
        _, hvp = jax.jvp(jax.grad(loss), (jnp.asarray(logits),), (jnp.asarray(direction),))
    np.testing.assert_allclose(grad, _np_ride_grad(logits, *args), rtol=1e-9, atol=1e-12)

    # First order: the full derivative (target differentiated too) is the same.
    eps = 1e-6
    full = np.empty_like(logits)
    for idx in np.ndindex(logits.shape):
        hi, lo = logits.copy(), logits.copy()
        hi[idx] += eps
        lo[idx] -= eps
        full[idx] = (_np_ride(hi, labels, counts, reweighting, t0=t0, lam=lam, s=s) -
                     _np_ride(lo, labels, counts, reweighting, t0=t0, lam=lam, s=s)) / (2 * eps)
    np.testing.assert_allclose(full, grad, atol=1e-7)

    # Second order: d/de grad(z + e v) with q frozen at z, not the true Hessian-vector product.
    eps = 1e-5
    hi, lo = logits + eps * direction, logits - eps * direction
    frozen = (_np_ride_grad(hi, *args, frozen_target=logits) -
              _np_ride_grad(lo, *args, frozen_target=logits)) / (2 * eps)
    true_hvp = (_np_ride_grad(hi, *args) - _np_ride_grad(lo, *args)) / (2 * eps)
    np.testing.assert_allclose(hvp, frozen, atol=1e-8)
    assert np.abs(true_hvp - frozen).max() > 1e-3


def test_ride_reweighting_can_be_a_traced_switch():
    logits, labels, counts = _expert_case(3, 16, 10, 10.0, seed=6)
    logits = logits.astype(np.float32)
    step = jax.jit(lambda z, y, r: ride_losses.ride_loss(z, y, class_counts=counts, reweighting=r))
    for flag in (False, True):
        np.testing.assert_allclose(
            step(logits, labels, jnp.asarray(flag)),
            ride_losses.ride_loss(logits, labels, class_counts=counts, reweighting=flag), rtol=1e-6)
    assert abs(float(step(logits, labels, jnp.asarray(True))) -
               float(step(logits, labels, jnp.asarray(False)))) > 1e-3


def _np_routing_targets(expert_logits, labels):
    correct = np.stack([np.argmax(expert_logits[:i + 1].sum(0), -1) == labels
                        for i in range(len(expert_logits))])
    return np.stack([~correct[i] & correct[i + 1:].any(0) for i in range(len(expert_logits) - 1)])


def _np_bce_with_pos_weight(r, t, pos_weight):
    r, t = r.astype(np.float64), t.astype(np.float64)
    # -log sigmoid(r) = log(1 + e^-r); -log(1 - sigmoid(r)) = log(1 + e^r).
    per_elem = pos_weight * t * np.logaddexp(0, -r) + (1 - t) * np.logaddexp(0, r)
    return np.mean([row.mean() for row in per_elem])  # Mean over routers of batch means.


def test_routing_targets_hand_example():
    # Three experts, two classes, four samples; label 0 everywhere.
    z = np.array([[[0, 1], [1, 0], [0, 1], [0, 1]],     # expert 0: right on sample 1 only
                  [[3, 0], [0, 5], [2, 0], [0, 1]],     # experts 0+1: right on 0, 2
                  [[0, 0], [9, 0], [0, 0], [5, 0]]],    # experts 0+1+2: right on 0, 1, 2, 3
                 np.float32)
    labels = np.zeros(4, int)
    np.testing.assert_array_equal(
        ride_losses.routing_targets(z, labels),
        [[True, False, True, True],     # expert 0 wrong and a larger ensemble right
         [False, True, False, True]])   # experts 0+1 wrong and all three right


@pytest.mark.parametrize("experts, batch, classes", [(2, 5, 3), (3, 64, 10), (4, 33, 4)])
def test_routing_targets_and_loss_match_numpy(experts, batch, classes):
    rng = np.random.default_rng(experts)
    logits = rng.normal(size=(experts, batch, classes)).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    targets = np.asarray(ride_losses.routing_targets(logits, labels))
    np.testing.assert_array_equal(targets, _np_routing_targets(logits, labels))
    assert targets.shape == (experts - 1, batch) and targets.dtype == bool
    router = (rng.normal(size=targets.shape) * 5).astype(np.float32)
    router[0, :3] = [80.0, -80.0, 0.0]  # Saturated sigmoids.
    for pos_weight in (1.0, 20.0, 100.0):
        for t in (targets, rng.uniform(size=targets.shape)):
            np.testing.assert_allclose(
                ride_losses.routing_loss(router, t, pos_weight=pos_weight),
                _np_bce_with_pos_weight(router, t, pos_weight), rtol=2e-6, atol=1e-6)
    with jax.enable_x64(True):
        got = ride_losses.routing_loss(router.astype(np.float64), targets, pos_weight=100.0)
    np.testing.assert_allclose(got, _np_bce_with_pos_weight(router, targets, 100.0), rtol=1e-12)


def test_routing_loss_weights_only_positive_targets():
    r = np.zeros((1, 2), np.float32)  # Every BCE term is log 2 before weighting.
    np.testing.assert_allclose(
        ride_losses.routing_loss(r, np.array([[True, False]]), pos_weight=7.0),
        (7 + 1) / 2 * np.log(2), rtol=1e-6)


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_ride_losses_on_a_batch_sharded_mesh_equal_unsharded(axis_type):
    mesh = jax.make_mesh((4,), ("data",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    logits, labels, counts = _expert_case(3, 16, 10, 10.0, seed=9)
    logits, labels = logits.astype(np.float32), labels.astype(np.int32)
    teacher = np.random.default_rng(10).normal(size=(16, 10)).astype(np.float32)
    router = np.random.default_rng(11).normal(size=(2, 16)).astype(np.float32)

    def fn(z, y, t, r, flag):
        targets = ride_losses.routing_targets(z, y)
        return (ride_losses.ride_loss(z, y, class_counts=counts, reweighting=False),
                ride_losses.ride_loss(z, y, class_counts=counts, reweighting=True),
                ride_losses.ride_loss(z, y, class_counts=counts, reweighting=flag,
                                      diversity_factor=-0.45),
                ride_losses.ride_loss(z, y, class_counts=counts, reweighting=True,
                                      diversity_factor=0.0),
                losses.distillation_loss(z.mean(0), t, temperature=1.5),
                targets.astype(jnp.float32).sum(),
                ride_losses.routing_loss(r, targets, pos_weight=100.0))

    data = NamedSharding(mesh, P("data"))
    args = (jax.device_put(logits, NamedSharding(mesh, P(None, "data"))),
            jax.device_put(labels, data), jax.device_put(teacher, data),
            jax.device_put(router, NamedSharding(mesh, P(None, "data"))), jnp.asarray(True))
    with jax.set_mesh(mesh):
        sharded = jax.jit(fn)(*args)
    for a, b in zip(sharded, fn(logits, labels, teacher, router, True)):
        np.testing.assert_allclose(a, b, rtol=1e-5)


Z3 = np.zeros((3, 4, 5))
Y4 = np.zeros(4, int)


@pytest.mark.parametrize("call, match", [
    (lambda: ride_losses.ride_loss(np.zeros((4, 5)), Y4, class_counts=np.ones(5),
                                   reweighting=False),
     r"expert_logits must be \[E, B, C\], got shape \(4, 5\)"),
    (lambda: ride_losses.ride_loss(Z3, np.zeros(3, int), class_counts=np.ones(5),
                                   reweighting=False),
     r"labels must be \[B\] with B = 4"),
    (lambda: ride_losses.ride_loss(Z3, np.array([0, 5, 1, 1]), class_counts=np.ones(5),
                                   reweighting=False), r"labels must be in \[0, 5\), got \[5\]"),
    (lambda: ride_losses.ride_loss(Z3, np.array([0, -2, 1, 1]), class_counts=np.ones(5),
                                   reweighting=True), r"labels must be in \[0, 5\), got \[-2\]"),
    (lambda: ride_losses.ride_loss(Z3, Y4, class_counts=[3, 2, -1, 1, 1], reweighting=False),
     r"class_counts must be finite and positive .* got \[-1.0\] for classes \[2\]"),
    (lambda: ride_losses.ride_loss(Z3, Y4, class_counts=np.ones(6), reweighting=False),
     "class_counts has 6 entries but the logits have C = 5"),
    (lambda: ride_losses.ride_loss(Z3, Y4, class_counts=[100, 1, 1, 1, 1], reweighting=False,
                                   reweight_factor=2.0), "reweight_factor = 2.0 is too large"),
    (lambda: ride_losses.ride_loss(Z3, Y4, class_counts=np.ones(5), reweighting=jnp.asarray(1)),
     "reweighting must be a bool or a boolean scalar array"),
    (lambda: ride_losses.ride_loss(Z3, Y4, class_counts=np.ones(5), reweighting=False,
                                   base_temperature=0.0),
     "base_temperature must be a finite number > 0"),
    (lambda: ride_losses.ride_temperatures([3, -1]),
     "class_counts must be finite and non-negative"),
    (lambda: ride_losses.ride_temperatures([0, 0]), "positive sum"),
    (lambda: ride_losses.routing_targets(np.zeros((1, 4, 5)), Y4), "at least 2 experts"),
    (lambda: ride_losses.routing_targets(Z3, np.array([0, 1, 2, 7])),
     r"labels must be in \[0, 5\)"),
    (lambda: ride_losses.routing_loss(np.zeros((2, 4)), np.zeros((2, 3)), pos_weight=100.0),
     r"targets must have the shape of router_logits \(2, 4\), got \(2, 3\)"),
    (lambda: ride_losses.routing_loss(np.zeros((2, 4)), np.zeros((2, 4)), pos_weight=-1.0),
     "pos_weight must be a finite number >= 0"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
