"""Class-balanced loss (`ltx.methods.cb_loss`): the effective-number weights, the softmax,
sigmoid and focal losses against NumPy references written from Cui et al.'s formulas, the
deferred (DRW) switch, the sigmoid losses' starting bias, the prior correction, clear errors, and
each digits config through ltx-train, ltx-eval and ltx-predict."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cli_runs import check_train_eval_predict
from helpers import load_config, np_log_softmax, tiny_config
from ltx import losses, methods, models
from ltx.data.long_tail import long_tail_counts
from ltx.methods import cb_loss

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def _inputs(seed=0, experts=None, batch=16, classes=10, scale=6.0):
    rng = np.random.default_rng(seed)
    shape = (batch, classes) if experts is None else (experts, batch, classes)
    return (rng.uniform(-scale, scale, size=shape).astype(np.float32),
            rng.integers(0, classes, batch).astype(np.int32))


# NumPy references, written from the paper's formulas (Cui et al.), in float64.

def np_weights(counts, beta):
    effective = (1.0 - np.power(beta, counts)) / (1.0 - beta)  # E_n = (1 - beta^n) / (1 - beta)
    w = 1.0 / effective
    return w / w.sum() * len(counts)


def np_cb_softmax(z, y, w, divide_by_weights=False):
    nll = -np_log_softmax(np.asarray(z, np.float64))[..., np.arange(len(y)), y]
    wy = w[y]
    per_set = (wy * nll).sum(-1) / (wy.sum() if divide_by_weights else len(y))
    return np.mean(per_set)


def np_cb_focal(z, y, w, gamma):
    """(1/B) sum_i w_{y_i} sum_c -(1 - p_t)^gamma log p_t; gamma = 0 is the sigmoid CE."""
    z = np.asarray(z, np.float64)
    p = 1.0 / (1.0 + np.exp(-z))
    t = np.eye(z.shape[-1])[y]
    p_t = np.where(t == 1, p, 1.0 - p)
    terms = -np.power(1.0 - p_t, gamma) * np.log(p_t)
    return np.mean((w[y] * terms.sum(-1)).sum(-1) / len(y))


def test_weights_are_the_inverse_effective_numbers_normalised_to_C():
    # n = 1, 10, 100 with beta = 0.9: E_n = 1, (1 - 0.9^10) / 0.1 = 6.5132156,
    # (1 - 0.9^100) / 0.1 = 9.9997344; 1 / E_n normalised to sum to 3:
    np.testing.assert_allclose(losses.drw_class_weights(np.array([1, 10, 100]), beta=0.9),
                               [2.3932288, 0.3674420, 0.2393292], rtol=1e-6)
    np.testing.assert_allclose(losses.drw_class_weights(COUNTS, beta=0.0), np.ones(10))
    np.testing.assert_allclose(losses.drw_class_weights(COUNTS, beta=0.999),
                               np_weights(COUNTS, 0.999), rtol=1e-6)
    # CIFAR-100-LT at ratio 100 with beta 0.9999: head 0.0449, tail 4.378 (sum 100).
    cifar = losses.drw_class_weights(long_tail_counts(500, 100, 100.0), beta=0.9999)
    np.testing.assert_allclose([cifar[0], cifar[-1], cifar.sum()], [0.044876, 4.37831, 100.0],
                               rtol=1e-4)


@pytest.mark.parametrize("experts", [None, 2])
def test_softmax_loss_is_the_papers_weighted_cross_entropy(experts):
    z, y = _inputs(1, experts)
    w = np_weights(COUNTS, 0.9999)
    np.testing.assert_allclose(cb_loss.cb_softmax_loss(z, y, class_weights=w),
                               np_cb_softmax(z, y, w), rtol=1e-5)
    np.testing.assert_allclose(cb_loss.cb_softmax_loss(z, y, class_weights=w,
                                                       reduction="weights"),
                               np_cb_softmax(z, y, w, divide_by_weights=True), rtol=1e-5)
    # No weights: the plain mean cross-entropy under either reduction.
    plain = np_cb_softmax(z, y, np.ones(10))
    for reduction in cb_loss.REDUCTIONS:
        np.testing.assert_allclose(cb_loss.cb_softmax_loss(z, y, reduction=reduction), plain,
                                   rtol=1e-5)
    # The two reductions differ once the weights do (the check above could fail).
    assert abs(np_cb_softmax(z, y, w) - np_cb_softmax(z, y, w, True)) > 1e-2


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_sigmoid_and_focal_losses_are_the_papers_formulas(gamma):
    z, y = _inputs(2)
    w = np_weights(COUNTS, 0.999)
    np.testing.assert_allclose(cb_loss.cb_focal_loss(z, y, gamma=gamma, class_weights=w),
                               np_cb_focal(z, y, w, gamma), rtol=1e-5)
    if gamma == 0.0:
        np.testing.assert_allclose(cb_loss.cb_sigmoid_loss(z, y, class_weights=w),
                                   np_cb_focal(z, y, w, 0.0), rtol=1e-5)
    ze, _ = _inputs(3, experts=2)
    np.testing.assert_allclose(cb_loss.cb_focal_loss(ze, y, gamma=gamma, class_weights=w),
                               np.mean([np_cb_focal(ze[k], y, w, gamma) for k in range(2)]),
                               rtol=1e-5)


def test_focal_loss_stays_finite_for_large_logits():
    z, y = _inputs(4, scale=300.0)
    for gamma in (0.0, 0.5, 2.0):
        value, grad = jax.value_and_grad(
            lambda z: cb_loss.cb_focal_loss(z, y, gamma=gamma, class_weights=COUNTS / 50.0))(
                jnp.asarray(z))
        assert np.isfinite(value) and np.isfinite(np.asarray(grad)).all()
    # A confidently right entry costs almost nothing, a confidently wrong one about |z|.
    right = np.full((1, 3), -300.0, np.float32)
    right[0, 1] = 300.0
    assert float(cb_loss.cb_focal_loss(right, np.array([1]), gamma=2.0)) < 1e-30
    # Label 0: its own entry (z = -300, t = 1) costs 300, class 1's (z = 300, t = 0) 300 more.
    assert float(cb_loss.cb_focal_loss(right, np.array([0]), gamma=0.0)) == pytest.approx(
        600.0, rel=1e-6)


@pytest.mark.parametrize("loss_type", cb_loss.LOSS_TYPES)
def test_each_name_trains_its_loss_with_deferred_weights(loss_type):
    cfg = cb_loss.method_config(loss_type, beta=0.999, gamma=2.0, drw_epoch=3,
                                reduction="weights")
    method = methods.build(cfg, COUNTS)
    assert method.name == f"cb_{loss_type}" and method.num_experts == 1
    z, y = _inputs(5, experts=1)
    outputs = methods.Outputs(jnp.asarray(z))
    w = np_weights(COUNTS, 0.999)
    reference = {"softmax": lambda w: np_cb_softmax(z[0], y, w, divide_by_weights=True),
                 "sigmoid": lambda w: np_cb_focal(z[0], y, w, 0.0),
                 "focal": lambda w: np_cb_focal(z[0], y, w, 2.0)}[loss_type]
    loss = jax.jit(method.loss)
    np.testing.assert_allclose(loss(outputs, y, jnp.int32(2)), reference(np.ones(10)),
                               rtol=1e-5)
    np.testing.assert_allclose(loss(outputs, y, jnp.int32(3)), reference(w), rtol=1e-5)
    # drw_epoch 0 (the default, Cui et al.'s loss): weighted from the first epoch.
    eager = methods.build(cb_loss.method_config(loss_type, beta=0.999, gamma=2.0,
                                                reduction="weights"), COUNTS)
    np.testing.assert_allclose(eager.loss(outputs, y, jnp.int32(0)), reference(w), rtol=1e-5)
    assert abs(reference(w) - reference(np.ones(10))) > 1e-3


@pytest.mark.slow
def test_sigmoid_losses_start_from_the_official_bias():
    config = tiny_config("digits_lt_cb_focal")
    trunk = models.build(config.model, num_classes=10, num_experts=1)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 8, 8, 1)), jnp.float32)
    variables = trunk.init(jax.random.key(0), x, train=False)
    plain = trunk.apply(variables, x, train=False)
    for loss_type in ("sigmoid", "focal"):
        method = methods.build(cb_loss.method_config(loss_type), COUNTS)
        model = method.model(trunk)
        # Same variables, same names: the wrapper adds no parameters.
        assert jax.tree.structure(model.init(jax.random.key(0), x, train=False)) == \
            jax.tree.structure(variables)
        shifted = model.apply(variables, x, train=False)
        np.testing.assert_allclose(shifted - plain, -math.log(9.0), rtol=1e-5)
        assert method.model_additions == {"logit_offset": pytest.approx(-math.log(9.0))}
        # A constant per image: the softmax, and so every prediction, is the trunk's.
        np.testing.assert_allclose(jax.nn.softmax(shifted), jax.nn.softmax(plain), atol=1e-6)
    softmax = methods.build(cb_loss.method_config("softmax"), COUNTS)
    assert softmax.model(trunk) is trunk and softmax.model_additions == {}


def test_prior_correction_removes_the_weighted_training_prior():
    method = methods.build(cb_loss.method_config("softmax", beta=0.999), COUNTS)
    z, _ = _inputs(6)
    q = np.random.default_rng(6).dirichlet(np.ones(10))
    fitted = np_weights(COUNTS, 0.999) * COUNTS  # The weighted CE's implied prior, unnormalised.
    expected = z + np.log(q) - np.log(fitted / fitted.sum())
    corrected = np.asarray(method.correct_prior(jnp.asarray(z), jnp.asarray(q, jnp.float32)))
    np.testing.assert_allclose(corrected, expected, rtol=1e-5, atol=1e-4)
    # beta = 0 (no re-weighting): the plain cross-entropy correction, log q - log pi.
    plain = methods.build(cb_loss.method_config("softmax", beta=0.0), COUNTS)
    np.testing.assert_allclose(np.asarray(plain.correct_prior(jnp.asarray(z), q)),
                               z + np.log(q) - np.log(COUNTS / COUNTS.sum()), rtol=1e-5,
                               atol=1e-4)


@pytest.mark.parametrize("fields, counts, message", [
    (dict(name="cb_focal", beta=1.0), COUNTS, r"config\.method\.beta=1\.0; expected a number "
     r"in \[0, 1\)"),
    (dict(name="cb_softmax", beta=-0.5), COUNTS, r"config\.method\.beta=-0\.5"),
    (dict(name="cb_focal", gamma=-1.0), COUNTS, r"config\.method\.gamma=-1\.0; expected"),
    (dict(name="cb_softmax", reduction="sum"), COUNTS,
     r"config\.method\.reduction='sum'; expected one of \('batch', 'weights'\)"),
    (dict(name="cb_sigmoid", drw_epoch=-1), COUNTS, r"config\.method\.drw_epoch=-1"),
    (dict(name="cb_softmax"), np.array([5, 0, 3]), r"cb_softmax: class_counts must be finite "
     r"and positive .* for classes \[1\]"),
])
def test_bad_fields_are_named(fields, counts, message):
    with pytest.raises(ValueError, match=message):
        methods.build(ml_collections.ConfigDict(fields), counts)


def test_bad_arguments_of_the_losses_are_named():
    z, y = _inputs(7)
    with pytest.raises(ValueError, match=r"loss_type='hinge'; expected one of"):
        cb_loss.method_config("hinge")
    with pytest.raises(ValueError, match=r"cb_softmax_loss: reduction='mean'"):
        cb_loss.cb_softmax_loss(z, y, reduction="mean")
    with pytest.raises(ValueError, match=r"cb_focal_loss: gamma must be a finite number >= 0"):
        cb_loss.cb_focal_loss(z, y, gamma=-0.5)
    with pytest.raises(ValueError, match=r"cb_sigmoid_loss: class_weights must be \[C\]"):
        cb_loss.cb_sigmoid_loss(z, y, class_weights=np.ones(3))


def test_configs_carry_the_official_recipe():
    for name in ("cifar100_lt_cb_softmax", "cifar10_lt_cb_sigmoid", "cifar100_lt_cb_focal"):
        c = load_config(name)
        assert (c.method.beta, c.method.drw_epoch, c.model.head) == (0.9999, 0, "linear")
        assert (c.optimizer.lr, c.batch_size, c.optimizer.weight_decay) == (0.1, 128, 2e-4)
        assert not c.optimizer.nesterov and c.schedule.decay_factor == 0.01
        assert tuple(c.schedule.decay_epochs) == (160, 180) and c.num_epochs == 200
        assert c.mixup_alpha == 0.0 and c.data.augment.rotation == 0.0
    assert load_config("cifar10_lt_cb_focal").method.gamma == 1.0
    drw = load_config("cifar100_lt_cb_softmax", "drw=1").method
    assert (drw.drw_epoch, drw.reduction) == (160, "weights")
    assert load_config("digits_lt_cb_softmax", "drw=1,epochs=10").method.drw_epoch == 8


@pytest.mark.slow
@pytest.mark.parametrize("name, arg", [
    ("digits_lt_cb_softmax", "tiny=1,epochs=2,drw=1"),  # Through the DRW switch at epoch 1.
    ("digits_lt_cb_sigmoid", "tiny=1,epochs=1"),
    ("digits_lt_cb_focal", "tiny=1,epochs=1"),
])
def test_digits_config_trains_evaluates_and_predicts(name, arg, tmp_path):
    final, report = check_train_eval_predict(name, arg, tmp_path)
    assert final["epochs"] == load_config(name, arg).num_epochs
