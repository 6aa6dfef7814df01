"""Weight balancing (`ltx.methods.weight_balancing`): MaxNorm against a NumPy reference of the
official `MaxNorm_via_PGD` (radius, projection, when it is applied and to what), the stage-2
class-balanced loss and its weights against the official `CB_loss`, what stage 2 updates, the
configs' official recipe, and a tiny digits-LT run through ltx-train, ltx-eval and ltx-predict."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import cli_runs
from helpers import load_config, np_softmax, restore_state

from ltx import config_lib, methods, optim, parts as parts_lib, steps, trainer
from ltx.methods import cb_loss, weight_balancing as wb

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


# -- MaxNorm against the official projection ---------------------------------------------------

def np_radius(kernel_fc, thresh):
    """`setPerLayerThresh` on an official fc weight [C, F]: min + thresh (max - min) of the
    row norms."""
    norms = np.linalg.norm(kernel_fc, axis=1)
    return norms.min() + thresh * (norms.max() - norms.min())


def np_project(kernel_fc, radius):
    """`MaxNorm_via_PGD.PGD` on [C, F]: rows above the radius scaled to it, the rest untouched."""
    out = kernel_fc.copy()
    for c in range(out.shape[0]):
        norm = np.linalg.norm(out[c])
        if norm > radius:
            out[c] = out[c] * (radius / norm)
    return out


def _kernel(seed=0, experts=1, features=16, classes=10):
    """An ltx kernel [E, F, C] whose class norms spread from ~0.2 to ~6."""
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(experts, features, classes)).astype(np.float32)
    return k * np.linspace(0.05, 1.5, classes, dtype=np.float32)


@pytest.mark.parametrize("experts", [1, 3])
def test_radius_and_projection_match_the_official_pgd(experts):
    kernel = _kernel(experts=experts)
    radius = np.asarray(wb.max_norm_radius(jnp.asarray(kernel), 0.1))
    projected = np.asarray(wb.max_norm_project(jnp.asarray(kernel), radius))
    assert radius.shape == (experts, 1, 1)
    for e in range(experts):
        fc = kernel[e].T  # The official [C, F].
        r = np_radius(fc, 0.1)
        np.testing.assert_allclose(radius[e, 0, 0], r, rtol=1e-6)
        np.testing.assert_allclose(projected[e].T, np_project(fc, r), rtol=1e-6, atol=1e-7)
        norms = np.linalg.norm(fc, axis=1)
        below = norms <= r
        assert below.any() and (~below).any()
        # Columns under the radius come back bit-identical; the others land on the sphere.
        assert np.array_equal(projected[e][:, below], kernel[e][:, below])
        np.testing.assert_allclose(np.linalg.norm(projected[e][:, ~below], axis=0), r,
                                   rtol=1e-6)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"experts": {"head": {"dense": {"kernel": jnp.asarray(_kernel(seed)),
                                           "bias": jnp.asarray(rng.normal(size=(1, 10)) * 50,
                                                               jnp.float32)}},
                        "stage1": {"conv": {"kernel": jnp.asarray(rng.normal(size=(1, 3, 3)),
                                                                  jnp.float32)}}}}


def _random_grads(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 2, p.dtype), params)


def test_every_step_mode_projects_params_plus_update_after_each_step():
    params = _params()
    radius = np_radius(np.asarray(params["experts"]["head"]["dense"]["kernel"][0]).T, 0.1)
    tx = optax.chain(optax.sgd(0.5, momentum=0.9), wb.max_norm(0.1, every="step"))
    state = tx.init(params)
    sgd, sgd_state = optax.sgd(0.5, momentum=0.9), None
    sgd_state = sgd.init(params)
    for step in range(4):
        grads = _random_grads(params, step)
        plain, sgd_state = sgd.update(grads, sgd_state, params)
        updates, state = tx.update(grads, state, params)
        new = optax.apply_updates(params, updates)
        kernel = np.asarray(params["experts"]["head"]["dense"]["kernel"][0]
                            + plain["experts"]["head"]["dense"]["kernel"][0]).T
        np.testing.assert_allclose(np.asarray(new["experts"]["head"]["dense"]["kernel"][0]).T,
                                   np_project(kernel, radius), rtol=1e-5, atol=1e-6)
        assert np.linalg.norm(np.asarray(new["experts"]["head"]["dense"]["kernel"][0]),
                              axis=0).max() <= radius * (1 + 1e-5)
        # The bias and every other parameter take the plain SGD step, however large.
        for path in (("experts", "head", "dense", "bias"), ("experts", "stage1", "conv",
                                                            "kernel")):
            got, want = new, optax.apply_updates(params, plain)
            for key in path:
                got, want = got[key], want[key]
            assert np.array_equal(got, want), path
        params = new
    # The radius is the one of the parameters `init` saw, not of later ones.
    np.testing.assert_allclose(state[1].radii[0][0, 0, 0], radius, rtol=1e-6)


def test_epoch_mode_projects_only_on_the_step_that_completes_an_epoch():
    params = _params(1)
    tx = optax.chain(optax.sgd(0.5), wb.max_norm(0.1, every="epoch", steps_per_epoch=2.5))
    state = tx.init(params)
    projected_at = []
    for step in range(8):
        updates, state = tx.update(_random_grads(params, 10 + step), state, params)
        plain = jax.tree.map(lambda g: -0.5 * g, _random_grads(params, 10 + step))
        kernel_update = updates["experts"]["head"]["dense"]["kernel"]
        if not np.array_equal(kernel_update, plain["experts"]["head"]["dense"]["kernel"]):
            projected_at.append(step)
        params = optax.apply_updates(params, updates)
    # Epochs of 2.5 steps end within steps 2, 4 and 7 (0-indexed): floor((s+1)/2.5) grows.
    assert projected_at == [2, 4, 7]


def test_max_norm_inside_the_trainable_mask_leaves_frozen_parameters_alone():
    params = _params(2)
    cfg = ml_collections.ConfigDict(dict(name="sgd", momentum=0.9, nesterov=False,
                                         weight_decay=0.1, lr_multipliers=(), trainable=""))
    tx = optim.make_optimizer(cfg, 0.3, trainable=r"^experts/head/",
                              constraint=wb.max_norm(0.1, every="step"))
    plain_tx = optim.make_optimizer(cfg, 0.3, trainable=r"^experts/head/")
    grads = _random_grads(params, 3)
    updates, _ = tx.update(grads, tx.init(params), params)
    plain, _ = plain_tx.update(grads, plain_tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert np.array_equal(new["experts"]["stage1"]["conv"]["kernel"],
                          params["experts"]["stage1"]["conv"]["kernel"])
    radius = np_radius(np.asarray(params["experts"]["head"]["dense"]["kernel"][0]).T, 0.1)
    # Weight decay and SGD first (the plain optimizer's step), then the projection.
    stepped = np.asarray(params["experts"]["head"]["dense"]["kernel"][0]
                         + plain["experts"]["head"]["dense"]["kernel"][0]).T
    np.testing.assert_allclose(np.asarray(new["experts"]["head"]["dense"]["kernel"][0]).T,
                               np_project(stepped, radius), rtol=1e-5, atol=1e-6)


# -- the class-balanced loss of stage 2 ---------------------------------------------------------

def np_cb_weights(counts, beta):
    w = (1 - beta) / (1 - np.power(beta, np.asarray(counts, np.float64)))
    return w / w.sum() * len(counts)


def np_cb_bce(z, labels, weights):
    """The official `CB_loss(..., 'softmax')`: F.binary_cross_entropy(softmax(z), onehot,
    weight=w_y repeated over classes), mean over B x C, logs clamped at -100."""
    p = np_softmax(np.asarray(z, np.float64))
    t = np.eye(z.shape[1])[labels]
    with np.errstate(divide="ignore"):
        log_p, log_q = np.maximum(np.log(p), -100), np.maximum(np.log(1 - p), -100)
    w = np.asarray(weights)[labels][:, None]
    return np.mean(w * -(t * log_p + (1 - t) * log_q))


def test_stage2_weights_and_loss_are_the_official_cb_loss():
    config = wb.method_config()
    config.stage = "classifier"
    method = methods.build(config, COUNTS)
    rng = np.random.default_rng(4)
    logits = (rng.normal(size=(1, 20, 10)) * 4).astype(np.float32)
    labels = rng.integers(0, 10, 20)
    weights = np_cb_weights(COUNTS, 0.9999)
    assert weights.sum() == pytest.approx(10) and weights[-1] > 5 * weights[0]
    np.testing.assert_allclose(method.loss(methods.Outputs(logits), labels, jnp.int32(0)),
                               np_cb_bce(logits[0], labels, weights), rtol=1e-5)
    assert method.trainable == wb.HEAD_PATTERN and method.update_constraint is not None
    # loss_form='cross_entropy' is Cui et al.'s weighted softmax CE with the same weights.
    config.loss_form = "cross_entropy"
    ce = methods.build(config, COUNTS)
    np.testing.assert_allclose(
        ce.loss(methods.Outputs(logits), labels, jnp.int32(0)),
        cb_loss.cb_softmax_loss(logits[0], labels, class_weights=weights), rtol=1e-5)
    # Stage 1 is plain cross-entropy without a constraint.
    stage1 = methods.build(wb.method_config(), COUNTS)
    np.testing.assert_allclose(
        stage1.loss(methods.Outputs(logits), labels, jnp.int32(0)),
        optax.softmax_cross_entropy_with_integer_labels(logits[0], labels).mean(), rtol=1e-5)
    assert stage1.trainable is None and stage1.update_constraint is None


def test_cb_bce_clamps_like_pytorch_and_stays_differentiable():
    logits = np.array([[200.0, -200.0, 0.0], [0.0, 0.0, 0.0], [-150.0, 150.0, 10.0]],
                      np.float32)
    labels = np.array([1, 2, 1])
    weights = np.array([0.5, 1.0, 1.5])
    value, grad = jax.value_and_grad(
        lambda z: wb.cb_softmax_bce_loss(z, labels, class_weights=weights))(logits)
    np.testing.assert_allclose(value, np_cb_bce(logits, labels, weights), rtol=1e-5)
    assert np.isfinite(np.asarray(grad)).all()
    where = np.array([True, True, False])
    np.testing.assert_allclose(
        wb.cb_softmax_bce_loss(logits, labels, class_weights=weights, where=where),
        np_cb_bce(logits[:2], labels[:2], weights), rtol=1e-5)


# -- what stage 2 updates -----------------------------------------------------------------------

def _flat(tree):
    return {optim.parameter_path(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_stage2_updates_only_the_classifier_keeps_bn_in_train_mode_and_caps_its_norms():
    config = load_config("digits_lt_weight_balancing", "tiny=1")
    stage = {n: c for n, c, _ in config_lib.stage_configs(config)}["classifier"]
    stage.method.max_norm_every = "step"
    stage.method.max_norm_thresh = 0.0  # Every class capped at the smallest norm.
    parts = parts_lib.build(stage)
    plan = parts_lib.make_plan(stage, parts)
    mesh = steps.make_mesh()
    state = trainer.initial_state(stage, parts, plan, mesh, pretrained=False)
    split = parts.dataset.train
    images = np.stack([split.source[int(i)]["image"] for i in split.indices[:32]])
    images = ((images.astype(np.float32) / 255.0) - parts.dataset.mean) / parts.dataset.std
    batch = {"image": images, "label": np.asarray(split.labels[:32], np.int32)}
    step = steps.make_train_step(parts.model, parts.method, plan.tx, plan.learning_rate, mesh,
                                 steps_per_epoch=plan.steps_per_epoch)
    before = jax.device_get((state.params, state.batch_stats))
    after, _ = step(state, steps.make_to_global(mesh)(batch), jax.random.key(0), None)
    p0, s0 = (_flat(t) for t in before)
    p1, s1 = (_flat(t) for t in jax.device_get((after.params, after.batch_stats)))
    for name in p0:
        assert np.array_equal(p0[name], p1[name]) != name.startswith("experts/head/"), name
    # As the official `model.train()`: the frozen network's BatchNorm statistics still move.
    assert all(not np.array_equal(s0[n], s1[n]) for n in s0)
    # thresh 0: the radius is the smallest stage-1 class norm; every class above it after the
    # step lands on it, the one below stays below.
    smallest = np.linalg.norm(p0["experts/head/dense/kernel"][0], axis=0).min()
    norms = np.linalg.norm(p1["experts/head/dense/kernel"][0], axis=0)
    assert norms.max() <= smallest * (1 + 1e-5)
    assert np.sum(np.isclose(norms, smallest, rtol=1e-5)) >= len(norms) - 1


# -- configs and errors -----------------------------------------------------------------------

def test_cifar100_config_follows_the_official_demos():
    config = load_config("cifar100_lt_weight_balancing")
    stages = {n: c for n, c, _ in config_lib.stage_configs(config)}
    first, second = stages["features"], stages["classifier"]
    assert first.data.imbalance_ratio == 100 and first.model.head == "linear"
    assert (first.num_epochs, first.batch_size, first.optimizer.lr) == (320, 64, 0.01)
    assert (first.optimizer.weight_decay, first.optimizer.momentum,
            first.optimizer.nesterov) == (5e-3, 0.9, False)
    assert (first.schedule.name, first.schedule.warmup_epochs) == ("cosine", 0)
    assert first.mixup_alpha == 0.0 and first.data.augment.rotation == 0.0
    assert (second.num_epochs, second.batch_size, second.optimizer.lr) == (10, 64, 0.01)
    assert (second.optimizer.weight_decay, second.optimizer.momentum) == (0.1, 0.9)
    assert second.schedule.name == "cosine" and second.data.sampler == "shuffle"
    assert (second.method.stage, second.method.beta, second.method.loss_form) == (
        "classifier", 0.9999, "official")
    assert (second.method.max_norm_thresh, second.method.max_norm_every) == (0.1, "epoch")
    assert config_lib.stage_configs(config)[1][2] == {"init_from": "features"}
    short = {n: c for n, c, _ in config_lib.stage_configs(
        load_config("cifar100_lt_weight_balancing", "epochs=32"))}
    assert short["features"].num_epochs == 32 and short["classifier"].num_epochs == 1


@pytest.mark.parametrize("fields, match", [
    (dict(stage="both"), r"config.method.stage='both'; expected one of \('features', "
                         r"'classifier'\)"),
    (dict(beta=1.0), r"config.method.beta=1.0; expected a number in \[0, 1\)"),
    (dict(loss_form="focal"), r"config.method.loss_form='focal'; expected one of"),
    (dict(max_norm_thresh=-0.1), r"config.method.max_norm_thresh=-0.1; expected a number >= 0"),
    (dict(max_norm_every="batch"), r"config.method.max_norm_every='batch'; expected one of"),
])
def test_bad_fields_are_named(fields, match):
    config = wb.method_config().to_dict()
    config.update(dict(stage="classifier"), **fields)
    with pytest.raises(ValueError, match=match):
        methods.build(ml_collections.ConfigDict(config), COUNTS)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"MaxNorm every='iteration'; expected one of"):
        wb.max_norm(0.1, every="iteration")
    with pytest.raises(ValueError, match=r"MaxNorm thresh=nan; expected a finite number >= 0"):
        wb.max_norm(float("nan"))
    with pytest.raises(ValueError, match=r"MaxNorm pattern .* matches no trainable parameter"):
        wb.max_norm(0.1).init({"stem": {"kernel": jnp.ones((3, 3))}})
    with pytest.raises(ValueError, match=r"\[F, C\] or \[E, F, C\], got shape \(10,\)"):
        wb.max_norm_radius(jnp.ones(10), 0.1)
    with pytest.raises(ValueError, match=r"cb_softmax_bce_loss: logits must be \[B, C\]"):
        wb.cb_softmax_bce_loss(np.zeros((1, 4, 10)), np.zeros(4, int), class_weights=np.ones(10))


# -- a tiny run through the command-line tools ------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("weight_balancing") / "run")
    cli_runs.train("digits_lt_weight_balancing", "tiny=1", path)
    return path


@pytest.mark.slow
def test_ltx_train_caps_the_classifier_and_ltx_eval_and_predict_run(workdir, tmp_path):
    from ltx import workdirs

    with open(os.path.join(workdir, "final_metrics.json")) as f:
        assert set(json.load(f)["stages"]) == {"features", "classifier"}
    runs = workdirs.restore_stages(workdir)
    first, second = (_flat(jax.device_get(runs[s].variables["params"]))
                     for s in ("features", "classifier"))
    for name in first:
        assert np.array_equal(first[name], second[name]) != name.startswith("experts/head/")
    # The run ends on an epoch boundary, so the last step projected: every class under the
    # radius that stage 1's classifier fixed.
    radius = np_radius(first["experts/head/dense/kernel"][0].T, 0.1)
    assert np.linalg.norm(second["experts/head/dense/kernel"][0], axis=0).max() <= radius * (
        1 + 1e-5)
    # The radius lives in the optimizer state, so a resumed stage 2 keeps stage 1's.
    state = restore_state(os.path.join(workdir, "classifier"))
    constraint_states = [x for x in jax.tree_util.tree_leaves(
        state.opt_state, is_leaf=lambda x: isinstance(x, wb.MaxNormState))
        if isinstance(x, wb.MaxNormState)]
    assert len(constraint_states) == 1 and len(constraint_states[0].radii) == 1
    np.testing.assert_allclose(np.asarray(constraint_states[0].radii[0]).ravel(), [radius],
                               rtol=1e-5)
    report = cli_runs.evaluate(workdir)
    assert report["meta"]["method"] == "weight_balancing"
    labels = cli_runs.digit_images(tmp_path / "images")
    found = cli_runs.predict(workdir, tmp_path / "images")
    assert sorted(found) == [f"digit{i}.png" for i in range(len(labels))]
