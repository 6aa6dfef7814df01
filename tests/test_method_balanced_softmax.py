"""Balanced Softmax (`ltx.methods.balanced_softmax`): the loss against a NumPy reference written
from Ren et al.'s formula, its identity with logit adjustment at tau = 1 ('la': same loss, same
gradients, same training), the official recipes, clear errors, and the digits config through
ltx-train, ltx-eval and ltx-predict."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cli_runs import check_train_eval_predict, train
from helpers import load_config
from ltx import methods
from ltx.methods import balanced_softmax, balpoe

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def _inputs(seed=0, experts=None, batch=16, classes=10):
    rng = np.random.default_rng(seed)
    shape = (batch, classes) if experts is None else (experts, batch, classes)
    return (rng.uniform(-20, 20, size=shape).astype(np.float32),
            rng.integers(0, classes, batch).astype(np.int32))


def np_balanced_softmax(z, y, counts):
    """-(1/B) sum_i log phi_{y_i}, phi_j = n_j exp(z_j) / sum_k n_k exp(z_k) (Ren et al.),
    in float64 with the usual max shift; leading (expert) axes averaged."""
    z = np.asarray(z, np.float64)
    scores = counts * np.exp(z - z.max(-1, keepdims=True))
    phi = scores / scores.sum(-1, keepdims=True)
    return np.mean(-np.log(phi[..., np.arange(len(y)), y]).mean(-1))


@pytest.mark.parametrize("experts", [None, 3])
def test_loss_is_the_papers_balanced_softmax(experts):
    z, y = _inputs(1, experts)
    np.testing.assert_allclose(
        balanced_softmax.balanced_softmax_loss(z, y, class_counts=COUNTS),
        np_balanced_softmax(z, y, COUNTS), rtol=1e-5)
    # Counts over six orders of magnitude (iNaturalist-like): log n in float64 first.
    counts = np.geomspace(1, 1e6, 10).round()
    np.testing.assert_allclose(
        balanced_softmax.balanced_softmax_loss(z, y, class_counts=counts),
        np_balanced_softmax(z, y, counts), rtol=1e-5)
    # Equal counts: plain cross-entropy, which the long-tailed counts are not.
    plain = np_balanced_softmax(z, y, np.ones(10))
    np.testing.assert_allclose(balanced_softmax.balanced_softmax_loss(
        z, y, class_counts=np.full(10, 7)), plain, rtol=1e-5)
    assert abs(np_balanced_softmax(z, y, COUNTS) - plain) > 1e-2


def _la_and_bs(counts, experts=1):
    la = methods.build(ml_collections.ConfigDict(dict(name="la", num_experts=1, tau=1.0)),
                       counts) if experts == 1 else methods.build(
        balpoe.method_config((0.0,) * experts), counts)
    return la, methods.build(balanced_softmax.method_config(experts), counts)


@pytest.mark.parametrize("experts", [1, 2])
def test_same_loss_gradients_and_prediction_as_logit_adjustment_with_tau_1(experts):
    la, bs = _la_and_bs(COUNTS, experts)
    z, y = _inputs(2, experts)
    outputs = lambda z: methods.Outputs(z)  # noqa: E731
    la_value, la_grad = jax.value_and_grad(lambda z: la.loss(outputs(z), y, 0))(jnp.asarray(z))
    bs_value, bs_grad = jax.value_and_grad(lambda z: bs.loss(outputs(z), y, 0))(jnp.asarray(z))
    np.testing.assert_allclose(bs_value, la_value, rtol=1e-6)
    np.testing.assert_allclose(bs_grad, la_grad, rtol=1e-5, atol=1e-7)
    # Plain logits at test, balanced prior (lambda 0) in the test-prior correction.
    np.testing.assert_allclose(bs.aggregate(outputs(z)), la.aggregate(outputs(z)), rtol=1e-6)
    q = np.random.default_rng(2).dirichlet(np.ones(10))
    mean = jnp.asarray(z.reshape(experts, 16, 10).mean(0))
    np.testing.assert_allclose(bs.correct_prior(mean, q), la.correct_prior(mean, q), rtol=1e-6)
    np.testing.assert_allclose(bs.correct_prior(mean, q), mean + np.log(q), rtol=1e-5,
                               atol=1e-5)
    assert bs.expert_lambdas == la.expert_lambdas == (0.0,) * experts
    assert bs.num_experts == la.num_experts == experts


def test_logit_adjustments_epsilon_is_the_only_difference():
    """'la' trains on z + log(pi + 1e-9) (the official gLA code's epsilon), Balanced Softmax on
    z + log n exactly: each is the paper's formula with its own n, and they part only where a
    prior is near 1e-9. (On the most skewed benchmark, iNaturalist 2018, with 2 of its 437,513
    images in the rarest class, the largest shift log(1 + 1e-9 / pi) is 2.2e-4.)"""
    counts = np.array([1e9, 1e6, 10.0, 1.0])  # Priors down to 1e-9.
    la, bs = _la_and_bs(counts)
    z, y = _inputs(3, 1, classes=4)
    outputs = methods.Outputs(jnp.asarray(z))
    eps_counts = counts / counts.sum() + 1e-9
    np.testing.assert_allclose(la.loss(outputs, y, 0), np_balanced_softmax(z, y, eps_counts),
                               rtol=1e-5)
    np.testing.assert_allclose(bs.loss(outputs, y, 0), np_balanced_softmax(z, y, counts),
                               rtol=1e-5)
    assert abs(np_balanced_softmax(z, y, eps_counts) - np_balanced_softmax(z, y, counts)) > 1e-2
    inat_shift = math.log1p(1e-9 / (2 / 437513))
    assert 2e-4 < inat_shift < 2.3e-4


@pytest.mark.parametrize("fields, counts, message", [
    (dict(name="balanced_softmax"), np.array([5, 0, 3]),
     r"balanced_softmax: class_counts must be finite and positive .* for classes \[1\]"),
    (dict(name="balanced_softmax", num_experts=0), COUNTS,
     r"config\.method\.num_experts=0; expected an integer >= 1"),
])
def test_bad_input_is_named(fields, counts, message):
    with pytest.raises(ValueError, match=message):
        methods.build(ml_collections.ConfigDict(fields), counts)
    z, y = _inputs(4)
    with pytest.raises(ValueError, match=r"balanced_softmax_loss: class_counts has 3 entries"):
        balanced_softmax.balanced_softmax_loss(z, y, class_counts=[1, 2, 3])


def test_official_recipes():
    # CIFAR-100-LT: 10,847 images at ratio 100 -> ceil(10847 / 512) = 22 batches per epoch,
    # ceil(13000 / 22) = 591 epochs, ceil(800 / 22) = 37 warmup epochs; 9,502 at ratio 200 ->
    # 19 batches, 685 and 43.
    assert balanced_softmax.official_cifar_epochs(10847) == (591, 37)
    assert balanced_softmax.official_cifar_epochs(9502) == (685, 43)
    for arg, (epochs, warmup) in (("", (591, 37)), ("ir=200", (685, 43))):
        c = load_config("cifar100_lt_balanced_softmax", arg)
        assert (c.num_epochs, c.schedule.warmup_epochs) == (epochs, warmup)
        assert (c.batch_size, c.optimizer.lr, c.optimizer.weight_decay) == (512, 0.1, 5e-4)
        assert c.schedule.name == "cosine" and not c.optimizer.nesterov
        assert (c.model.head, c.data.last_batch, c.method.name) == (
            "linear", "drop", "balanced_softmax")
    c10 = load_config("cifar10_lt_balanced_softmax")  # 12,406 images: 25 batches.
    assert (c10.num_epochs, c10.schedule.warmup_epochs) == (520, 32)
    imagenet = load_config("imagenet_lt_balanced_softmax")
    assert (imagenet.model.name, imagenet.num_epochs, imagenet.batch_size) == (
        "resnet10", 90, 512)
    assert (imagenet.optimizer.lr, imagenet.schedule.name, imagenet.schedule.warmup_epochs) == (
        0.2, "cosine", 0)
    assert imagenet.model.head == "linear" and not imagenet.optimizer.nesterov


@pytest.mark.slow
def test_training_is_that_of_logit_adjustment_with_tau_1(tmp_path):
    """The same recipe (configs/digits_lt_la.py) trained with 'la' and with 'balanced_softmax'
    ends with the same model; with plain cross-entropy it does not."""
    arg = "tiny=1,epochs=1"
    la = train("digits_lt_la", arg, str(tmp_path / "la"))
    bs = train("digits_lt_la", arg, str(tmp_path / "bs"), "--config.method.name=balanced_softmax")
    ce = train("digits_lt_la", arg, str(tmp_path / "ce"), "--config.method.name=ce")
    assert (la["method"], bs["method"], ce["method"]) == ("la", "balanced_softmax", "ce")
    keys = ("nll", "val_nll", "ece", "top1_all", "top1_few", "val_top1_all", "brier")
    for key in keys:
        assert math.isclose(bs[key], la[key], rel_tol=1e-4, abs_tol=1e-4), key
    assert max(abs(ce[k] - la[k]) for k in ("nll", "val_nll", "brier")) > 1e-3


@pytest.mark.slow
def test_digits_config_trains_evaluates_and_predicts(tmp_path):
    final, report = check_train_eval_predict("digits_lt_balanced_softmax", "tiny=1,epochs=1",
                                             tmp_path)
    assert final["num_experts"] == 1 and report["meta"]["num_experts"] == 1
