"""LADE (`ltx.methods.lade`): the loss against a NumPy reference of the official formula, its
gradient, the test-time prior correction, the configs' official recipes, and a tiny digits-LT
run through ltx-train, ltx-eval (shifted test distributions) and ltx-predict."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from helpers import CONFIG_DIR, load_config, np_ce, np_log_softmax, np_softmax

from ltx import losses, methods
from ltx.methods import lade

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


# -- the loss against the formula ---------------------------------------------------------------


def np_regularizer(z, labels, counts, remine_lambda):
    """The official LADELoss written out per class: -sum_c pi_c (m_c - T_c - lambda T_c^2),
    m_c the mean true-class logit of class c's images in the batch (0 without any), T_c the
    log-mean-exp over the whole batch of z_ic - log(pi_c + 1e-9) + log(1/C + 1e-9)."""
    z = np.asarray(z, np.float64)
    batch, num_classes = z.shape
    pi = np.asarray(counts, np.float64) / np.sum(counts)
    total = 0.0
    for c in range(num_classes):
        members = z[labels == c, c]
        m = members.sum() / (len(members) + 1e-8)
        a = z[:, c] - np.log(pi[c] + 1e-9) + np.log(1.0 / num_classes + 1e-9)
        t = a.max() + np.log(np.mean(np.exp(a - a.max())))
        total -= pi[c] * (m - t - remine_lambda * t ** 2)
    return total


def np_lade_loss(z, labels, counts, alpha, remine_lambda):
    pi = np.asarray(counts, np.float64) / np.sum(counts)
    prior_ce = np_ce(np.asarray(z, np.float64) + np.log(pi + 1e-9), labels)
    return prior_ce + alpha * np_regularizer(z, labels, counts, remine_lambda)


def _batch(seed=0, batch=16, present=(0, 2, 3, 7), scale=3.0):
    """Logits [B, 10] and labels drawn only from `present` (the other classes are absent)."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(batch, 10)) * scale).astype(np.float32)
    return logits, rng.choice(np.asarray(present), batch)


@pytest.mark.parametrize("alpha, remine_lambda", [(0.1, 0.01), (0.05, 0.5), (1.0, 0.0)])
def test_loss_matches_the_numpy_formula_with_absent_classes(alpha, remine_lambda):
    logits, labels = _batch()
    assert len(np.unique(labels)) == 4  # Six of the ten classes are absent from the batch.
    np.testing.assert_allclose(
        lade.lade_regularizer(logits, labels, class_counts=COUNTS, remine_lambda=remine_lambda),
        np_regularizer(logits, labels, COUNTS, remine_lambda), rtol=1e-5, atol=1e-5)
    loss = jax.jit(lambda z, y: lade.lade_loss(z, y, class_counts=COUNTS, alpha=alpha,
                                               remine_lambda=remine_lambda))
    np.testing.assert_allclose(loss(logits, labels),
                               np_lade_loss(logits, labels, COUNTS, alpha, remine_lambda),
                               rtol=1e-5, atol=1e-5)


def test_a_padded_batch_is_the_batch_of_its_real_rows():
    logits, labels = _batch(seed=1, batch=20, present=(1, 4, 5))
    logits[14:] = 250.0  # Padding rows, arbitrary values.
    where = np.arange(20) < 14
    got = lade.lade_loss(logits, labels, class_counts=COUNTS, alpha=0.1, remine_lambda=0.01,
                         where=where)
    np.testing.assert_allclose(got, np_lade_loss(logits[:14], labels[:14], COUNTS, 0.1, 0.01),
                               rtol=1e-5, atol=1e-5)


def test_zero_logits_on_balanced_counts_give_log_c():
    # Every T_c is log mean exp(0) = 0 and every m_c is 0, so R = 0 and PriorCE = log C.
    counts = np.full(10, 7)
    zeros = np.zeros((8, 10), np.float32)
    labels = np.array([0, 0, 1, 3, 3, 3, 9, 5])
    assert float(lade.lade_regularizer(zeros, labels, class_counts=counts,
                                       remine_lambda=0.5)) == pytest.approx(0.0, abs=1e-6)
    assert float(lade.lade_loss(zeros, labels, class_counts=counts, alpha=0.3,
                                remine_lambda=0.5)) == pytest.approx(np.log(10), rel=1e-6)


def test_without_the_regulariser_it_is_logit_adjustment_with_tau_1():
    logits, labels = _batch(seed=2)
    np.testing.assert_allclose(
        lade.lade_loss(logits, labels, class_counts=COUNTS, alpha=0.0, remine_lambda=0.5),
        losses.logit_adjusted_loss(logits, labels, class_counts=COUNTS, tau=1.0), rtol=1e-6)


def test_absent_classes_count_through_the_log_mean_exp_with_the_formula_gradient():
    """The gradient on an absent class's column is PriorCE's plus
    alpha pi_c (1 + 2 lambda T_c) softmax_i(a_ic): the absent class still counts (no
    `exist_only`), and only through T_c."""
    logits, labels = _batch(seed=3)
    alpha, lam = 0.1, 0.5
    grad = jax.jit(jax.grad(lambda z: lade.lade_loss(z, labels, class_counts=COUNTS,
                                                     alpha=alpha, remine_lambda=lam)))(
        jnp.asarray(logits))
    pi = COUNTS / COUNTS.sum()
    z = logits.astype(np.float64)
    ce_grad = (np_softmax(z + np.log(pi + 1e-9)) - np.eye(10)[labels]) / len(labels)
    for c in sorted(set(range(10)) - set(labels.tolist())):
        a = z[:, c] - np.log(pi[c] + 1e-9) + np.log(0.1 + 1e-9)
        t = np.log(np.mean(np.exp(a)))
        expected = ce_grad[:, c] + alpha * pi[c] * (1 + 2 * lam * t) * np.exp(a - a.max()) / \
            np.exp(a - a.max()).sum()
        np.testing.assert_allclose(grad[:, c], expected, rtol=1e-4, atol=1e-6)
        assert np.abs(alpha * pi[c] * (1 + 2 * lam * t)) > 1e-3  # Not just PriorCE's part.


def test_gradient_is_finite_for_extreme_logits_and_absent_classes():
    rng = np.random.default_rng(4)
    logits = rng.uniform(-300, 300, size=(12, 10)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1, 2, 2, 0, 1])
    value, grad = jax.jit(jax.value_and_grad(
        lambda z: lade.lade_loss(z, labels, class_counts=COUNTS, alpha=0.1,
                                 remine_lambda=0.5)))(jnp.asarray(logits))
    assert np.isfinite(value) and np.isfinite(np.asarray(grad)).all()
    assert np.abs(np.asarray(grad)).max() > 0


# -- the method and its test-time prior ---------------------------------------------------------


def test_method_trains_lade_loss_and_predicts_with_the_plain_logits():
    method = methods.build(lade.method_config("imagenet_lt"), COUNTS)
    assert method.num_experts == 1
    logits, labels = _batch(seed=5)
    outputs = methods.Outputs(jnp.asarray(logits)[None])
    np.testing.assert_allclose(
        jax.jit(method.loss)(outputs, jnp.asarray(labels), jnp.int32(3)),
        np_lade_loss(logits, labels, COUNTS, 0.05, 0.5), rtol=1e-5, atol=1e-5)
    # The uniform-test prediction is the logits, with no training prior added or removed.
    np.testing.assert_allclose(method.aggregate(outputs), logits, rtol=1e-6)


def test_prior_correction_adds_the_log_test_prior_as_the_official_evaluation():
    method = methods.build(lade.method_config(), COUNTS)
    rng = np.random.default_rng(6)
    logits = jnp.asarray(rng.normal(size=(30, 10)) * 4, jnp.float32)
    test_labels = rng.choice(10, 400, p=COUNTS[::-1] / COUNTS.sum())
    q = np.bincount(test_labels, minlength=10) / len(test_labels)  # The split's frequencies.
    corrected = np.asarray(method.correct_prior(logits, q))
    np.testing.assert_allclose(corrected, np.asarray(logits) + np.log(q + 1e-9), rtol=1e-5,
                               atol=1e-5)
    # `run_networks.eval` adds log q to the logits: the same probabilities.
    np.testing.assert_allclose(np_softmax(corrected), np_softmax(np.asarray(logits) + np.log(q)),
                               rtol=1e-5, atol=1e-7)
    # A uniform test prior changes nothing (a constant shift), so the plain prediction is it.
    uniform = np.asarray(method.correct_prior(logits, np.full(10, 0.1)))
    np.testing.assert_allclose(np_log_softmax(uniform), np_log_softmax(np.asarray(logits)),
                               atol=1e-5)


@pytest.mark.parametrize("fields, match", [
    (dict(alpha=-0.1), r"config.method.alpha=-0.1; expected a finite number >= 0"),
    (dict(remine_lambda=float("nan")), r"config.method.remine_lambda=nan"),
    (dict(alpha="big"), r"config.method.alpha='big'"),
    (dict(alpha=None), r"config.method.alpha is missing"),
    (dict(num_experts=3), r"num_experts=3 but method 'lade' builds 1"),
])
def test_bad_config_values_are_named(fields, match):
    config = lade.method_config().to_dict()
    config.update(fields)
    with pytest.raises(ValueError, match=match):
        methods.build(ml_collections.ConfigDict(config), COUNTS)


def test_bad_loss_arguments_are_named():
    logits, labels = _batch(seed=7)
    with pytest.raises(ValueError, match=r"lade_loss: alpha must be a finite number >= 0, "
                                         r"got -1"):
        lade.lade_loss(logits, labels, class_counts=COUNTS, alpha=-1, remine_lambda=0.1)
    with pytest.raises(ValueError, match=r"lade_regularizer: logits must be \[B, C\]"):
        lade.lade_regularizer(logits[None], labels, class_counts=COUNTS)
    with pytest.raises(ValueError, match=r"class_counts has 9 entries"):
        lade.lade_loss(logits, labels, class_counts=COUNTS[:9], alpha=0.1, remine_lambda=0.1)
    with pytest.raises(ValueError, match=r"dataset='cifar10_lt'"):
        lade.method_config("cifar10_lt")


# -- configs: the official recipes --------------------------------------------------------------


def test_configs_follow_the_official_recipes():
    c100 = load_config("cifar100_lt_lade", "ir=10")
    assert c100.data.imbalance_ratio == 10.0 and c100.model.head == "linear"
    assert (c100.method.alpha, c100.method.remine_lambda) == (0.1, 0.01)
    assert (c100.num_epochs, c100.batch_size, c100.optimizer.lr) == (200, 256, 0.2)
    assert (c100.optimizer.weight_decay, c100.optimizer.nesterov) == (5e-4, False)
    assert (c100.schedule.name, c100.schedule.warmup_epochs) == ("multistep", 5)
    assert c100.schedule.decay_epochs == (119, 159) and c100.schedule.decay_factor == 0.01
    assert c100.mixup_alpha == 0.0 and c100.data.augment.rotation == 0.0
    # The official loop stops each epoch after floor(N / B) steps.
    for config in (c100, load_config("imagenet_lt_lade"), load_config("places_lt_lade"),
                   load_config("inaturalist2018_lade")):
        assert config.data.last_batch == "drop"
    x50 = load_config("imagenet_lt_lade")
    assert x50.model.name == "resnext50_32x4d" and x50.model.head == "linear"
    assert (x50.method.alpha, x50.method.remine_lambda) == (0.05, 0.5)
    assert (x50.num_epochs, x50.batch_size, x50.optimizer.lr) == (180, 256, 0.05)
    assert (x50.schedule.name, x50.schedule.warmup_epochs, x50.optimizer.nesterov) == (
        "cosine", 0, False)
    inat = load_config("inaturalist2018_lade")
    assert inat.model.name == "resnet50" and inat.data.augment.color_jitter == (0, 0, 0, 0)
    assert (inat.method.alpha, inat.method.remine_lambda) == (0.05, 0.5)
    assert (inat.num_epochs, inat.batch_size, inat.optimizer.lr) == (200, 256, 0.1)
    assert inat.optimizer.weight_decay == 1e-4 and inat.schedule.name == "cosine"
    places = load_config("places_lt_lade")
    assert places.model.name == "resnet152" and places.optimizer.lr_multipliers == (
        ("head", 50.0),)
    assert (places.method.alpha, places.method.remine_lambda) == (0.005, 0.1)
    assert (places.num_epochs, places.batch_size, places.optimizer.lr) == (30, 128, 0.001)
    assert places.schedule.decay_epochs == (9, 19) and places.optimizer.weight_decay == 5e-4
    # digits-LT: CE's recipe with LADE's loss and head, so the two sit in one table.
    digits, ce = load_config("digits_lt_lade"), load_config("digits_lt_ce")
    assert digits.model.head == "linear" and digits.method.name == "lade"
    for key in ("optimizer", "schedule", "data"):
        assert digits[key].to_dict() == ce[key].to_dict(), key
    assert (digits.num_epochs, digits.batch_size) == (ce.num_epochs, ce.batch_size)


# -- a tiny run through the command-line tools --------------------------------------------------


def _cli(*args):
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lade") / "run")
    config = os.path.join(CONFIG_DIR, "digits_lt_lade.py")
    _cli("ltx.train", f"--config={config}:tiny=1,epochs=1", f"--workdir={path}")
    return path


@pytest.fixture(scope="module")
def predictor(workdir):
    from ltx import predict
    return predict.Predictor.from_workdir(workdir)


def _test_split(predictor):
    split = predictor.dataset.test
    images = np.stack([split.source[int(i)]["image"] for i in split.indices])
    return images, np.asarray(split.labels)


@pytest.mark.slow
def test_ltx_eval_reports_every_shifted_test_set_with_the_log_prior_added(workdir, predictor):
    from ltx import evaluators, workdirs
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        assert json.load(f)["method"] == "lade"
    _cli("ltx.cli", "eval", f"--workdir={workdir}", "--nopictures")
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        report = json.load(f)
    assert report["meta"]["method"] == "lade" and report["meta"]["prior_correction"]
    images, labels = _test_split(predictor)
    _, logits = predictor.logits(images)
    config = workdirs.load_config(workdir)
    subsets = evaluators.shifted_test_sets(
        labels, 10, max_per_class=config.evals.shifted.max_per_class,
        factors=config.evals.shifted.factors)
    distributions = report["distributions"]
    assert set(distributions) == set(subsets) and len(subsets) == 11
    for name, idx in subsets.items():
        q = np.bincount(labels[idx], minlength=10) / len(idx)
        for key, z in (("plain", logits[idx]), ("corrected", logits[idx] + np.log(q + 1e-9))):
            numbers = distributions[name][key]
            assert numbers["top1_samples"] == pytest.approx(
                100 * np.mean(z.argmax(-1) == labels[idx]), abs=1e-3), (name, key)
            nll = -np.mean(np_log_softmax(z.astype(np.float64))[np.arange(len(idx)), labels[idx]])
            assert numbers["nll"] == pytest.approx(nll, rel=1e-3, abs=1e-4), (name, key)


@pytest.mark.slow
def test_ltx_predict_gives_the_logits_softmax_and_its_prior_correction(workdir, predictor,
                                                                       tmp_path):
    images, _ = _test_split(predictor)
    images = images[:3]
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(tmp_path / f"digit{i}.png")
    _, logits = predictor.logits(images)
    prior = np.full(10, 0.02)
    prior[6] = 0.82
    for flags, z in (((), logits), ((f"--prior={','.join(map(str, prior))}",),
                                    logits + np.log(prior + 1e-9))):
        out = _cli("ltx.cli", "predict", f"--workdir={workdir}", "--top_k=10", *flags,
                   str(tmp_path))
        lines = sorted(line for line in out.splitlines() if line.startswith(str(tmp_path)))
        assert len(lines) == 3
        expected = np_softmax(z.astype(np.float64))
        for line, probs in zip(lines, expected):
            printed = {int(c): float(p) for c, p in re.findall(r"(\d+) \(([\d.]+)\)",
                                                               line.split(": ", 1)[1])}
            assert len(printed) == 10
            np.testing.assert_allclose([printed[c] for c in range(10)], probs, atol=1.5e-3)
