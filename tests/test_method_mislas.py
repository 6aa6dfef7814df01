"""MiSLAS (`ltx.methods.mislas`): label-aware smoothing against NumPy references of the paper's
and the official code's formulas, shift learning (exactly the BatchNorm running statistics move
in stage 2, and only with `shift_bn`), the stage-2 optimizer's two learning rates, the configs'
official recipes, and a tiny digits-LT run through ltx-train, ltx-eval and ltx-predict."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from PIL import Image

import cli_runs
from helpers import load_config, np_log_softmax, np_softmax

from ltx import config_lib, methods, optim, parts as parts_lib, steps, trainer
from ltx.methods import mislas

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


# -- label-aware smoothing against the formulas -------------------------------------------------

def np_smoothing(counts, head, tail, shape, power=None):
    """Eq. of the paper (concave / linear / convex) and the code's 'exp', class by class."""
    n1, nk = max(counts), min(counts)
    out = []
    for n in counts:
        u = (n - nk) / (n1 - nk)
        if shape == "concave":
            out.append(tail + (head - tail) * math.sin(math.pi * u / 2))
        elif shape == "linear":
            out.append(tail + (head - tail) * u)
        elif shape == "convex":
            out.append(head + (head - tail) * math.sin(3 * math.pi / 2 + math.pi * u / 2))
        else:
            out.append(tail + (head - tail) * u ** power)
    return np.array(out)


def np_las_loss(z, labels, eps):
    """The official `LabelAwareSmoothing.forward`, image by image."""
    logp = np_log_softmax(np.asarray(z, np.float64))
    total = 0.0
    for i, y in enumerate(labels):
        total += (1 - eps[y]) * -logp[i, y] + eps[y] * -logp[i].mean()
    return total / len(labels)


@pytest.mark.parametrize("shape, power", [("concave", None), ("linear", None),
                                          ("convex", None), ("exp", 2.0)])
def test_smoothing_values_match_the_formula(shape, power):
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 500, 40)
    got = mislas.smoothing_values(counts, smooth_head=0.4, smooth_tail=0.1, shape=shape,
                                  power=power)
    np.testing.assert_allclose(got, np_smoothing(counts, 0.4, 0.1, shape, power), rtol=1e-12)
    # The largest class gets smooth_head and the smallest smooth_tail, whatever the shape.
    assert got[np.argmax(counts)] == pytest.approx(0.4)
    assert got[np.argmin(counts)] == pytest.approx(0.1)


def test_concave_smooths_more_than_linear_more_than_convex_between_the_ends():
    kwargs = dict(smooth_head=0.3, smooth_tail=0.0)
    concave, linear, convex = (mislas.smoothing_values(COUNTS, shape=s, **kwargs)
                               for s in ("concave", "linear", "convex"))
    inner = slice(1, -1)
    assert np.all(concave[inner] > linear[inner]) and np.all(linear[inner] > convex[inner])
    assert np.all(np.diff(concave) < 0)  # Head classes (larger counts) are smoothed more.


def test_las_loss_matches_the_official_forward_and_label_smoothing():
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(24, 10)) * 4).astype(np.float32)
    labels = rng.integers(0, 10, 24)
    eps = mislas.smoothing_values(COUNTS, smooth_head=0.4, smooth_tail=0.1)
    loss = jax.jit(lambda z, y: mislas.label_aware_smoothing_loss(z, y, smoothing=eps))
    np.testing.assert_allclose(loss(logits, labels), np_las_loss(logits, labels, eps),
                               rtol=1e-5)
    # One eps for every class is ordinary label smoothing (target (1 - eps) e_y + eps / C).
    flat = np.full(10, 0.2)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, 10), 0.2)
    np.testing.assert_allclose(
        mislas.label_aware_smoothing_loss(logits, labels, smoothing=flat),
        optax.softmax_cross_entropy(logits, targets).mean(), rtol=1e-5)
    # eps 0 is cross-entropy.
    np.testing.assert_allclose(
        mislas.label_aware_smoothing_loss(logits, labels, smoothing=np.zeros(10)),
        optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), rtol=1e-5)


def test_a_padded_batch_is_its_real_rows():
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(12, 10)) * 3).astype(np.float32)
    logits[9:] = 300.0
    labels = rng.integers(0, 10, 12)
    eps = mislas.smoothing_values(COUNTS, smooth_head=0.3, smooth_tail=0.0)
    got = mislas.label_aware_smoothing_loss(logits, labels, smoothing=eps,
                                            where=np.arange(12) < 9)
    np.testing.assert_allclose(got, np_las_loss(logits[:9], labels[:9], eps), rtol=1e-5)


def test_the_classifier_stage_trains_las_with_the_official_concave_eps():
    config = mislas.method_config("cifar100_lt", 100)
    config.stage = "classifier"
    method = methods.build(config, COUNTS)
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(1, 16, 10)) * 5).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    eps = np_smoothing(COUNTS, 0.4, 0.1, "concave")
    np.testing.assert_allclose(method.loss(methods.Outputs(logits), labels, jnp.int32(0)),
                               np_las_loss(logits[0], labels, eps), rtol=1e-5)
    assert method.trainable == r"^experts/head/|^lws/"
    # Stage 1 is plain cross-entropy (the trainer mixes the batch).
    stage1 = methods.build(mislas.method_config("cifar100_lt", 100), COUNTS)
    np.testing.assert_allclose(
        stage1.loss(methods.Outputs(logits), labels, jnp.int32(0)),
        -np_log_softmax(logits[0].astype(np.float64))[np.arange(16), labels].mean(), rtol=1e-5)
    assert stage1.trainable is None and stage1.wrap_model is None


# -- shift learning: what stage 2 updates -----------------------------------------------------

def _stage2(shift_bn: bool, weight_scaling: bool = True):
    """The tiny digits-LT config's stage 2 (with shift_bn / LWS as asked): its parts, plan, a
    fresh state and one batch of real training images."""
    config = load_config("digits_lt_mislas", "tiny=1")
    stage = dict((n, c) for n, c, _ in config_lib.stage_configs(config))["classifier"]
    stage.method.shift_bn = shift_bn
    stage.method.weight_scaling = weight_scaling
    parts = parts_lib.build(stage)
    plan = parts_lib.make_plan(stage, parts)
    mesh = steps.make_mesh()
    state = trainer.initial_state(stage, parts, plan, mesh, pretrained=False)
    split = parts.dataset.train
    images = np.stack([split.source[int(i)]["image"] for i in split.indices[:32]])
    images = ((images.astype(np.float32) / 255.0) - parts.dataset.mean) / parts.dataset.std
    batch = {"image": images, "label": np.asarray(split.labels[:32], np.int32)}
    return stage, parts, plan, mesh, state, batch


def _one_step(parts, plan, mesh, state, batch):
    step = steps.make_train_step(parts.model, parts.method, plan.tx, plan.learning_rate, mesh,
                                 steps_per_epoch=plan.steps_per_epoch)
    before = jax.device_get((state.params, state.batch_stats))
    after_state, _ = step(state, steps.make_to_global(mesh)(batch), jax.random.key(0), None)
    return before, jax.device_get((after_state.params, after_state.batch_stats))


def _flat(tree):
    return {optim.parameter_path(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("shift_bn", [True, False])
def test_stage2_updates_the_classifier_lws_and_only_with_shift_bn_the_bn_statistics(shift_bn):
    _, parts, plan, mesh, state, batch = _stage2(shift_bn)
    (params0, stats0), (params1, stats1) = _one_step(parts, plan, mesh, state, batch)
    p0, p1 = _flat(params0), _flat(params1)
    learned = {"experts/head/dense/kernel", "experts/head/dense/bias", "lws/scales"}
    assert learned <= set(p0)
    for name in p0:
        if name in learned:
            assert not np.array_equal(p0[name], p1[name]), name
        else:  # Convolutions and BatchNorm scales and biases: bit-identical.
            assert np.array_equal(p0[name], p1[name]), name
    s0, s1 = _flat(stats0), _flat(stats1)
    assert s0 and set(s0) == set(s1)
    for name in s0:
        # Shift learning re-estimates every running mean and variance; without it none moves.
        assert np.array_equal(s0[name], s1[name]) != shift_bn, name


@pytest.mark.slow
def test_with_shift_bn_training_normalises_with_batch_statistics_and_without_it_not():
    for shift_bn in (True, False):
        _, parts, _, _, state, batch = _stage2(shift_bn)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        train_logits, _ = parts.model.apply(variables, batch["image"], train=True,
                                            mutable=["batch_stats"])
        eval_logits = parts.model.apply(variables, batch["image"], train=False)
        assert np.allclose(train_logits, eval_logits, atol=1e-6) != shift_bn


@pytest.mark.slow
def test_stage2_classifier_learns_at_lr_factor_times_lr_and_lws_at_lr():
    """SGD's first step is -lr (g + wd w) (the momentum buffer starts at the gradient): the
    classifier's lr is 0.1 x lr_factor (0.1 for CIFAR-100-LT ratio 10), LWS's 0.1."""
    stage, parts, plan, mesh, state, batch = _stage2(True)

    def loss_fn(params):
        raw, _ = parts.model.apply({"params": params, "batch_stats": state.batch_stats},
                                   batch["image"], train=True, mutable=["batch_stats"])
        return parts.method.loss(methods.Outputs(raw), batch["label"], jnp.int32(0))

    grads = _flat(jax.device_get(jax.grad(loss_fn)(state.params)))
    (params0, _), (params1, _) = _one_step(parts, plan, mesh, state, batch)
    p0, p1 = _flat(params0), _flat(params1)
    wd = stage.optimizer.weight_decay
    (pattern, lr_factor), = stage.optimizer.lr_multipliers
    assert pattern == mislas.HEAD_PATTERN and lr_factor == 0.1
    for name, lr in (("experts/head/dense/kernel", 0.1 * lr_factor),
                     ("experts/head/dense/bias", 0.1 * lr_factor), ("lws/scales", 0.1)):
        np.testing.assert_allclose(p1[name] - p0[name], -lr * (grads[name] + wd * p0[name]),
                                   rtol=2e-4, atol=1e-7, err_msg=name)


def test_lws_multiplies_the_logits_per_class():
    _, parts, _, _, state, batch = _stage2(True)
    params = jax.device_get(state.params)
    scales = np.linspace(0.5, 2.0, 10).astype(np.float32)
    params = dict(params, lws={"scales": scales})
    plain = dict(params)
    del plain["lws"]
    variables = {"params": params, "batch_stats": state.batch_stats}
    with_lws = parts.model.apply(variables, batch["image"], train=False)
    without = parts.model.trunk.apply({"params": plain, "batch_stats": state.batch_stats},
                                      batch["image"], train=False)
    np.testing.assert_allclose(with_lws, without * scales, rtol=1e-6)


# -- configs and errors -----------------------------------------------------------------------

def _stages(config):
    return {name: stage for name, stage, _ in config_lib.stage_configs(config)}


@pytest.mark.parametrize("name, ir, smooth, lr_factor, shift_bn", [
    ("cifar100_lt_mislas", 100, (0.4, 0.1), 0.2, True),
    ("cifar100_lt_mislas", 50, (0.3, 0.0), 0.1, True),
    ("cifar100_lt_mislas", 10, (0.2, 0.0), 0.1, True),
    ("cifar10_lt_mislas", 100, (0.3, 0.0), 0.5, False),
    ("cifar10_lt_mislas", 50, (0.2, 0.0), 0.2, False),
    ("cifar10_lt_mislas", 10, (0.1, 0.0), 0.2, False),
])
def test_cifar_configs_follow_the_official_yaml(name, ir, smooth, lr_factor, shift_bn):
    config = load_config(name, f"ir={ir}")
    stage1, stage2 = _stages(config)["mixup"], _stages(config)["classifier"]
    assert stage1.model.name == "resnet32" and stage1.model.head == "linear"
    assert (stage1.mixup_alpha, stage1.num_epochs, stage1.batch_size) == (1.0, 200, 128)
    assert (stage1.optimizer.lr, stage1.optimizer.weight_decay, stage1.optimizer.nesterov) == (
        0.1, 2e-4, False)
    assert (stage1.schedule.name, stage1.schedule.warmup_epochs, stage1.schedule.decay_epochs,
            stage1.schedule.decay_factor) == ("multistep", 5, (160, 180), 0.1)
    assert stage1.data.augment.rotation == 0.0 and stage1.method.stage == "mixup"
    assert (stage2.method.stage, stage2.num_epochs, stage2.mixup_alpha) == ("classifier", 10, 0.0)
    assert (stage2.method.smooth_head, stage2.method.smooth_tail) == smooth
    assert stage2.method.smooth_shape == "concave" and stage2.method.shift_bn is shift_bn
    assert stage2.method.weight_scaling is True and stage2.data.sampler == "class_balanced"
    assert (stage2.optimizer.lr, stage2.optimizer.lr_multipliers) == (
        0.1, ((mislas.HEAD_PATTERN, lr_factor),))
    assert (stage2.optimizer.weight_decay, stage2.optimizer.momentum) == (2e-4, 0.9)
    assert (stage2.schedule.name, stage2.schedule.warmup_epochs) == ("cosine", 0)
    assert config_lib.stage_configs(config)[1][2] == {"init_from": "mixup"}


def test_large_scale_configs_follow_the_official_yaml():
    for name, epochs, wd in (("imagenet_lt_mislas", 180, 5e-4),
                             ("inaturalist2018_mislas", 200, 1e-4)):
        stages = _stages(load_config(name))
        stage1, stage2 = stages["mixup"], stages["classifier"]
        assert stage1.model.name == "resnet50" and stage1.model.head == "linear", name
        assert (stage1.mixup_alpha, stage1.num_epochs, stage1.batch_size) == (0.2, epochs, 256)
        assert (stage1.optimizer.lr, stage1.optimizer.weight_decay) == (0.1, wd), name
        assert (stage1.schedule.name, stage1.schedule.warmup_epochs) == ("cosine", 0), name
        assert stage1.data.augment.color_jitter == (0.4, 0.4, 0.4, 0.0), name
        assert (stage2.num_epochs, stage2.batch_size, stage2.optimizer.weight_decay) == (
            10, 256, wd), name
        assert (stage2.method.smooth_head, stage2.method.smooth_tail) == (0.3, 0.0), name
        assert stage2.method.shift_bn is True, name
        assert stage2.optimizer.lr_multipliers == ((mislas.HEAD_PATTERN, 0.05),), name


def test_epochs_rescales_both_stages():
    stages = _stages(load_config("cifar100_lt_mislas", "epochs=40"))
    assert stages["mixup"].num_epochs == 40 and stages["mixup"].schedule.decay_epochs == (32, 36)
    assert stages["classifier"].num_epochs == 2
    assert _stages(load_config("digits_lt_mislas"))["classifier"].num_epochs == 3


@pytest.mark.parametrize("fields, match", [
    (dict(stage="finetune"), r"config.method.stage='finetune'; expected one of \('mixup', "
                             r"'classifier'\)"),
    (dict(smooth_head=1.5), r"config.method.smooth_head=1.5; expected a number in \[0, 1\]"),
    (dict(smooth_tail=None), r"config.method.smooth_tail=None"),
    (dict(shift_bn=1), r"config.method.shift_bn=1; expected True or False"),
    (dict(smooth_shape="round"), r"config.method.smooth_shape='round'; expected one of"),
    (dict(smooth_shape="exp", smooth_power=0.0), r"shape='exp' needs power > 0, got power=0.0"),
])
def test_bad_fields_are_named(fields, match):
    config = mislas.method_config("cifar100_lt", 100).to_dict()
    config.update(dict(stage="classifier"), **fields)
    with pytest.raises(ValueError, match=match):
        methods.build(ml_collections.ConfigDict(config), COUNTS)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"every class has 5 images; .* needs class_counts that "
                                         r"differ"):
        mislas.smoothing_values(np.full(10, 5), smooth_head=0.3, smooth_tail=0.0)
    with pytest.raises(ValueError, match=r"smoothing must be \[C\] = \[10\], got shape \(9,\)"):
        mislas.label_aware_smoothing_loss(np.zeros((4, 10)), np.zeros(4, int),
                                          smoothing=np.zeros(9))
    with pytest.raises(ValueError, match=r"smoothing must lie in \[0, 1\]"):
        mislas.label_aware_smoothing_loss(np.zeros((4, 10)), np.zeros(4, int),
                                          smoothing=np.full(10, 1.5))
    with pytest.raises(ValueError, match=r"no official MiSLAS stage-2 config for "
                                         r"dataset='cifar100_lt', imbalance_ratio=200"):
        load_config("cifar100_lt_mislas", "ir=200")
    with pytest.raises(ValueError, match=r"\['smooth_head', 'smooth_tail', 'shift_bn'\] not "
                                         r"given"):
        mislas.method_config()


# -- a tiny run through the command-line tools ------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mislas") / "run")
    cli_runs.train("digits_lt_mislas", "tiny=1", path)
    return path


@pytest.mark.slow
def test_ltx_train_shifts_only_bn_statistics_and_ltx_eval_and_predict_use_lws(workdir,
                                                                             tmp_path):
    from ltx import predict, workdirs

    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    assert final["method"] == "mislas" and set(final["stages"]) == {"mixup", "classifier"}
    runs = workdirs.restore_stages(workdir)
    first, second = (jax.device_get(runs[s].variables) for s in ("mixup", "classifier"))
    p1, p2 = _flat(first["params"]), _flat(second["params"])
    assert set(p2) == set(p1) | {"lws/scales"}
    for name in p1:
        assert np.array_equal(p1[name], p2[name]) != name.startswith("experts/head/"), name
    s1, s2 = _flat(first["batch_stats"]), _flat(second["batch_stats"])
    assert all(not np.array_equal(s1[n], s2[n]) for n in s1)  # shift_bn: every statistic moved.

    report = cli_runs.evaluate(workdir)
    assert report["meta"]["method"] == "mislas" and report["meta"]["prior_correction"]
    cli_runs.digit_images(tmp_path / "images")
    found = cli_runs.predict(workdir, tmp_path / "images", top_k=10)
    predictor = predict.Predictor.from_workdir(workdir)
    images = np.stack([np.asarray(Image.open(tmp_path / "images" / f"digit{i}.png"))[..., None]
                       for i in range(3)])
    _, logits = predictor.logits(images)
    # The prediction is softmax of the LWS-scaled logits (the official evaluation's).
    trunk_only = predictor.predictor.model.trunk.apply(
        {"params": {k: v for k, v in second["params"].items() if k != "lws"},
         "batch_stats": second["batch_stats"]},
        predictor.preprocess(images), train=False)[0]
    np.testing.assert_allclose(logits, trunk_only * p2["lws/scales"], rtol=1e-4, atol=1e-5)
    for i, probs in enumerate(np_softmax(logits.astype(np.float64))):
        printed = {int(c): p for c, p in found[f"digit{i}.png"]}
        np.testing.assert_allclose([printed[c] for c in range(10)], probs, atol=1.5e-3)
