"""Decoupled classifiers (`ltx.methods.decoupled`): tau-normalisation, its tau selection, LWS
and NCM against NumPy references of the official formulas, cRT's frozen trunk and re-initialised
head, the configs' official recipes and bad input, and tiny digits-LT runs of CE then cRT and of
BalPoE then tau-normalisation through ltx-train, ltx-eval and ltx-predict."""

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

from helpers import CONFIG_DIR, load_config, np_softmax, tiny_config

from ltx import (checkpointing, config_lib, methods, models, optim, parts as parts_lib, steps,
                 trainer)
from ltx.methods import balpoe, base
from ltx.methods.decoupled import classifiers, finish
from ltx.methods.decoupled import config as decoupled
from ltx.methods.decoupled.models import (NCMModel, RetrainedHeadModel, ScaledLogitsModel,
                                          TauNormModel)

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])
OFFICIAL_TAUS = np.linspace(0, 2, 21)  # `tau_norm.py`: `for p in np.linspace(0,2,21)`.


# -- NumPy references of the official formulas -----------------------------------------------


def np_tau_normalize(kernel, tau):
    """`pnorm`: each class vector over its own norm to the power tau (kernel [..., F, C])."""
    kernel = np.asarray(kernel, np.float64)
    return kernel / np.linalg.norm(kernel, axis=-2, keepdims=True) ** tau


def np_balanced_accuracy(predictions, labels):
    return np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)])


def np_tau_sweep(features, kernel, labels, taus):
    """Balanced accuracy of the expert-mean tau-normalised logits for every tau."""
    result = []
    for tau in taus:
        logits = np.einsum("enf,efc->enc", np.asarray(features, np.float64),
                           np_tau_normalize(kernel, tau)).mean(0)
        result.append(np_balanced_accuracy(logits.argmax(-1), labels))
    return np.asarray(result)


def np_ncm_scores(train, train_labels, test, num_classes, feature_type, distance):
    """One expert: `KNNClassifier` with `get_knncentroids`' statistics."""
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    mean = train.mean(0)

    def transform(x):
        if feature_type == "cl2n":
            x = x - mean
        if feature_type in ("l2n", "cl2n"):
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return x

    centroids = np.stack([transform(train)[train_labels == c].mean(0)
                          for c in range(num_classes)])
    x = transform(test)
    if distance == "l2":
        return -np.array([[np.sum((xi - c) ** 2) for c in centroids] for xi in x])
    return x @ centroids.T / train.shape[1]


def _separable(seed=0, experts=2, classes=6, dims=8, per_class=20, head_bias=True):
    """(features [E, N, F], kernel [E, F, C], labels [N]): class-mean features, and per-expert
    kernels whose column norms fall from head to tail classes, so that tau changes the
    decisions."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dims)) * 1.5
    labels = np.repeat(np.arange(classes), per_class)
    features = np.stack([means[labels] + rng.normal(size=(len(labels), dims)) * 1.2
                         for _ in range(experts)]).astype(np.float32)
    scale = np.geomspace(4.0, 0.5, classes) if head_bias else np.ones(classes)
    kernel = np.stack([(means.T + rng.normal(size=(dims, classes)) * 0.3) * scale
                       for _ in range(experts)]).astype(np.float32)
    return features, kernel, labels


# -- tau-normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0, 1.7])
def test_tau_normalize_matches_the_formula(tau):
    _, kernel, _ = _separable(seed=1)
    got = np.asarray(classifiers.tau_normalize(kernel, tau))
    np.testing.assert_allclose(got, np_tau_normalize(kernel, tau), rtol=1e-5, atol=1e-6)
    if tau == 0.0:
        np.testing.assert_array_equal(got, kernel)  # No scaling at all.
    if tau == 1.0:
        np.testing.assert_allclose(np.linalg.norm(got, axis=-2), 1.0, rtol=1e-5)


def test_tau_norm_logits_drop_the_bias_and_tau_1_is_cosine_like():
    features, kernel, _ = _separable(seed=2)
    for tau in (0.0, 0.5, 1.0):
        expected = np.einsum("enf,efc->enc", features.astype(np.float64),
                             np_tau_normalize(kernel, tau))
        np.testing.assert_allclose(classifiers.tau_norm_logits(features, kernel, tau),
                                   expected, rtol=1e-4, atol=1e-4)
    # tau = 0: the joint classifier's logits without its bias.
    np.testing.assert_allclose(classifiers.tau_norm_logits(features, kernel, 0.0),
                               np.einsum("enf,efc->enc", features, kernel), rtol=1e-5,
                               atol=1e-5)
    # tau = 1: ||f|| cos(f, w_c), so dividing by ||f|| leaves the cosine similarity.
    logits = np.asarray(classifiers.tau_norm_logits(features, kernel, 1.0), np.float64)
    cosine = np.einsum("enf,efc->enc",
                       features / np.linalg.norm(features, axis=-1, keepdims=True),
                       kernel / np.linalg.norm(kernel, axis=-2, keepdims=True))
    np.testing.assert_allclose(logits / np.linalg.norm(features, axis=-1, keepdims=True),
                               cosine, rtol=1e-4, atol=1e-5)


def test_the_tau_chosen_on_val_is_the_argmax_of_a_brute_force_numpy_sweep():
    features, kernel, labels = _separable(seed=3)
    expected = np_tau_sweep(features, kernel, labels, OFFICIAL_TAUS)
    assert len(np.unique(np.round(expected, 6))) > 2  # tau decides something here.
    assert np.argmax(expected) > 0  # tau = 0 (the joint classifier) is not the best.
    got = classifiers.tau_sweep(features, kernel, labels)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert classifiers.select_tau(got) == pytest.approx(OFFICIAL_TAUS[np.argmax(expected)])
    # Ties go to the smallest tau (np.argmax's first).
    assert classifiers.select_tau([0.5, 0.7, 0.7], (0.0, 0.4, 0.9)) == 0.4
    # The grid is the official one.
    np.testing.assert_allclose(decoupled.TAU_GRID, OFFICIAL_TAUS, atol=1e-12)


def test_the_sweep_aggregates_the_experts_with_the_given_aggregation():
    features, kernel, labels = _separable(seed=4)
    first_only = classifiers.tau_sweep(features, kernel, labels,
                                       aggregate=lambda outputs: outputs.logits[0])
    np.testing.assert_allclose(first_only,
                               np_tau_sweep(features[:1], kernel[:1], labels, OFFICIAL_TAUS))


def test_tau_norm_model_is_the_formula_on_the_trunk_features():
    trunk = _trunk(head="linear", experts=2)
    variables = _init(trunk)
    images = _images()
    _, features = trunk.apply(variables, images, train=False, return_features=True)
    kernel = variables["params"]["experts"]["head"]["dense"]["kernel"]
    for tau in (0.0, 0.8):
        got = TauNormModel(trunk, tau=tau).apply(variables, images, train=False)
        np.testing.assert_allclose(got, np.einsum("ebf,efc->ebc", np.asarray(features),
                                                  np_tau_normalize(kernel, tau)),
                                   rtol=1e-4, atol=1e-4)


# -- LWS ---------------------------------------------------------------------------------------


def test_lws_scales_every_class_of_the_frozen_linear_classifier_bias_included():
    trunk = _trunk(head="linear", experts=2)
    model = ScaledLogitsModel(trunk)
    variables = _init(model)
    assert np.all(np.asarray(variables["params"]["lws_scales"]) == 1.0)  # Starts at f_c = 1.
    scales = np.random.default_rng(5).uniform(0.2, 3.0, size=(2, 10)).astype(np.float32)
    params = dict(variables["params"], lws_scales=scales)
    images = _images()
    _, features = trunk.apply(variables, images, train=False, return_features=True)
    dense = variables["params"]["experts"]["head"]["dense"]
    expected = scales[:, None, :] * (np.einsum("ebf,efc->ebc", np.asarray(features),
                                               np.asarray(dense["kernel"]))
                                     + np.asarray(dense["bias"])[:, None, :])
    got = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images,
                      train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(classifiers.lws_logits(np.ones((2, 3, 10)), scales),
                               np.broadcast_to(scales[:, None, :], (2, 3, 10)))
    # Only the scales receive a gradient.
    grads = _grads(model, {"params": params, "batch_stats": variables["batch_stats"]})
    assert np.abs(grads["lws_scales"]).sum() > 0
    assert _norm({k: v for k, v in grads.items() if k != "lws_scales"}) == 0.0


# -- NCM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_type, distance", [("cl2n", "l2"), ("l2n", "l2"),
                                                    ("un", "l2"), ("cl2n", "cos")])
def test_ncm_matches_a_numpy_nearest_mean_reference(feature_type, distance):
    rng = np.random.default_rng(6)
    train = rng.normal(size=(2, 90, 5)).astype(np.float32) + 3.0  # Off-centre, as ReLU features.
    train_labels = np.repeat(np.arange(6), 15)
    test = rng.normal(size=(2, 25, 5)).astype(np.float32) + 3.0
    mean, centroids = classifiers.ncm_statistics(train, train_labels, 6, feature_type)
    np.testing.assert_allclose(mean, train.mean(1), rtol=1e-5)
    got = np.asarray(classifiers.ncm_logits(test, mean, centroids, feature_type=feature_type,
                                            distance=distance))
    for e in range(2):
        expected = np_ncm_scores(train[e], train_labels, test[e], 6, feature_type, distance)
        np.testing.assert_allclose(got[e], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got[e].argmax(-1), expected.argmax(-1))


@pytest.mark.slow
def test_ncm_model_predicts_with_the_class_means_in_its_collection():
    trunk = _trunk(head="cosine", experts=1)
    model = NCMModel(trunk)
    variables = _init(model)
    assert variables["ncm"]["centroids"].shape == (1, 10, 16)
    images = _images(20)
    _, features = trunk.apply(variables, images, train=False, return_features=True)
    labels = np.arange(20) % 10
    mean, centroids = classifiers.ncm_statistics(features, labels, 10)
    got = model.apply(dict(variables, ncm={"mean": mean, "centroids": centroids}), images,
                      train=False)
    expected = np_ncm_scores(features[0], labels, features[0], 10, "cl2n", "l2")
    np.testing.assert_allclose(got[0], expected, rtol=1e-4, atol=1e-4)


def test_ncm_needs_every_class():
    with pytest.raises(ValueError, match=r"classes \[3\] have no training image"):
        classifiers.ncm_statistics(np.ones((1, 4, 2)), np.array([0, 1, 2, 4]), 5)


# -- cRT ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_crt_trains_only_the_heads_on_stop_gradient_features():
    joint = balpoe.method_config((1.0, 0.0, -1.0))
    method = methods.build(decoupled.method_config("crt", joint), COUNTS)
    assert method.num_experts == 3 and method.trainable == method.reinit == r"^experts/head/"
    assert method.correct_prior is base.balanced_prior_correction
    trunk = _trunk(head="cosine", experts=3)
    model = method.model(trunk)
    assert isinstance(model, RetrainedHeadModel)
    variables = _init(model)
    assert jax.tree.structure(variables) == jax.tree.structure(_init(trunk))  # Same names.
    images = _images()
    np.testing.assert_allclose(model.apply(variables, images, train=False),
                               trunk.apply(variables, images, train=False), rtol=1e-5,
                               atol=1e-5)
    grads = _grads(model, variables)
    head = grads["experts"].pop("head")
    assert _norm(head) > 0 and _norm(grads) == 0.0  # No gradient reaches the trunk.
    mask = optim.trainable_mask(variables["params"], method.trainable)
    assert [optim.parameter_path(p) for p, keep in
            jax.tree_util.tree_leaves_with_path(mask) if keep] == ["experts/head/kernel"]
    # The loss: each expert's CE, averaged; the prediction: BalPoE's mean of the experts.
    outputs = methods.Outputs(jnp.asarray(np.random.default_rng(7).normal(
        size=(3, 6, 10)), jnp.float32))
    labels = jnp.arange(6) % 10
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(0)), np.mean(
        [_np_ce(outputs.logits[k], labels) for k in range(3)]), rtol=1e-5)
    np.testing.assert_allclose(method.aggregate(outputs), np.mean(outputs.logits, 0), rtol=1e-6)


@pytest.mark.slow
def test_init_checkpoint_keeps_the_reinitialised_head_fresh_and_loads_the_trunk(tiny_workdir):
    config = ml_collections.ConfigDict(tiny_config().to_dict())  # BalPoE, 3 experts.
    config.method = decoupled.method_config("crt", config.method)
    parts = parts_lib.build(config)
    fresh = trainer.initial_state(config, parts, parts_lib.make_plan(config, parts),
                                  steps.make_mesh(), pretrained=False)
    fresh_params = jax.device_get(fresh.params)
    params, _, summary = trainer.pretrained_variables(
        tiny_workdir, fresh_params, jax.device_get(fresh.batch_stats),
        reinit=parts.method.reinit)
    joint = checkpointing.load_pretrained(tiny_workdir)["params"]
    assert "1 re-initialised" in summary
    head = np.asarray(params["experts"]["head"]["kernel"])
    np.testing.assert_array_equal(head, fresh_params["experts"]["head"]["kernel"])
    assert not np.allclose(head, joint["experts"]["head"]["kernel"])
    for path, value in _leaves(params).items():
        if not path.startswith("experts/head/"):
            np.testing.assert_array_equal(value, _leaves(joint)[path], err_msg=path)
    with pytest.raises(ValueError, match="trainable pattern '\\^nothing/' matches no parameter"):
        trainer.pretrained_variables(tiny_workdir, fresh_params,
                                     jax.device_get(fresh.batch_stats), reinit=r"^nothing/")


@pytest.mark.slow
def test_crt_from_a_finished_workdir_checks_that_it_holds_the_same_trunk(tiny_workdir, tmp_path):
    config = ml_collections.ConfigDict(tiny_config().to_dict())  # What trained tiny_workdir.
    config = decoupled.from_workdir(config, "crt", tiny_workdir, recipe=(10, 0.2, 512, 5e-4),
                                    batch_size=64)
    assert config.model.init_checkpoint == tiny_workdir and not config.stage_order
    assert (config.method.name, config.method.base, config.num_epochs) == ("crt", "balpoe", 10)
    assert config.data.sampler == "class_balanced" and config.optimizer.trainable == ""
    assert decoupled.check_base_workdir(config) is config
    for key, value, shown in [("model.widths", (4, 8, 32), r"model.widths: \(4, 8, 16\) there"),
                              ("data.imbalance_ratio", 20.0, r"data.imbalance_ratio: 10.0 there")]:
        other = ml_collections.ConfigDict(config.to_dict())
        section, field = key.split(".")
        other[section][field] = value
        with pytest.raises(ValueError, match=r"was trained with another trunk than this "
                                             r"config's: " + shown):
            decoupled.check_base_workdir(other)
    config.model.init_checkpoint = str(tmp_path)
    with pytest.raises(ValueError, match=r"is neither a finished ltx run"):
        decoupled.check_base_workdir(config)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, match", [
    (dict(name="crt"), r"config.method.base is missing"),
    (dict(name="crt", base="lws"), r"config.method.base='lws'; expected the method that"),
    (dict(name="lws", base="nope"), r"config.method.base='nope'; expected one of"),
    (dict(name="crt", base="cbe", stage="baseline", reject=True, fusion="soft_voting",
          oe_weight=0.5), r"base='cbe' trains on its own view of the dataset"),
])
def test_bad_method_fields_are_named(fields, match):
    with pytest.raises(ValueError, match=match):
        methods.build(ml_collections.ConfigDict(fields), COUNTS)


def test_bad_models_and_options_are_named():
    ride = load_config("digits_lt_ride").method.to_dict()
    ride.update(stage="router")
    method = methods.build(decoupled.method_config("crt", ml_collections.ConfigDict(ride)),
                           COUNTS)
    with pytest.raises(ValueError, match=r"base method 'ride' wraps the trunk in "
                                         r"CascadeRoutedModel"):
        method.model(_trunk(head="cosine", experts=3))
    with pytest.raises(ValueError, match=r"tau-normalisation needs the trunk's linear "
                                         r"classifier, but model.head='cosine'"):
        TauNormModel(_trunk(head="cosine", experts=1), tau=1.0)
    with pytest.raises(ValueError, match=r"method.tau_norm=-1.0; expected a number >= 0"):
        TauNormModel(_trunk(head="linear", experts=1), tau=-1.0)
    ce = balpoe.ce_method_config()
    for kind, fields, match in [
            ("tau_norm", dict(tau_norm=-0.5), r"method.tau_norm=-0.5; expected a number >= 0"),
            ("tau_norm", dict(tau_norm_split="dev"), r"method.tau_norm_split='dev'"),
            ("tau_norm", dict(tau_norm_grid=()), r"method.tau_norm_grid=\(\)"),
            ("ncm", dict(ncm_features="pca"), r"method.ncm_features='pca'; expected one of"),
            ("ncm", dict(ncm_distance="l1"), r"method.ncm_distance='l1'; expected one of"),
            ("crt", dict(tau_norm=1.0), r"unknown field\(s\) \['tau_norm'\] for 'crt'"),
            ("knn", {}, r"kind='knn'; expected one of")]:
        with pytest.raises(ValueError, match=match):
            decoupled.method_config(kind, ce, **fields)
    with pytest.raises(ValueError, match=r"tau must be a finite number >= 0, got -1"):
        classifiers.tau_normalize(np.ones((3, 2)), -1)
    with pytest.raises(ValueError, match=r"kernel must be \[E, F, C\], got shape \(3, 2\)"):
        classifiers.tau_norm_logits(np.ones((1, 4, 3)), np.ones((3, 2)), 1.0)
    with pytest.raises(ValueError, match=r"feature_type='pca'"):
        classifiers.ncm_logits(np.ones((1, 2, 3)), np.ones((1, 3)), np.ones((1, 4, 3)),
                               feature_type="pca")


def test_bad_configs_are_named_before_anything_trains():
    c = config_lib.digits_lt_config()
    c.method = balpoe.method_config((1.0, 0.0, -1.0))
    with pytest.raises(ValueError, match=r"needs a linear classifier, but model.head='cosine'"):
        decoupled.add_stage(c, "tau_norm")
    with pytest.raises(ValueError, match=r"no official crt recipe for data.name='digits_lt'"):
        decoupled.add_stage(c, "crt")
    with pytest.raises(ValueError, match=r"only \('crt', 'lws'\) train a run of their own"):
        decoupled.from_workdir(c, "ncm", "/tmp/x")
    cifar = config_lib.cifar_lt_config(dataset="cifar100_lt", imbalance_ratio=100,
                                       mixup_alpha=0.0)
    cifar.model.head = "linear"
    cifar.method = balpoe.ce_method_config()
    with pytest.raises(ValueError, match=r"data.name='cifar100_lt' has no val split"):
        decoupled.add_stage(cifar, "tau_norm")
    staged = load_config("digits_lt_ce_crt")
    staged.method = balpoe.ce_method_config()
    staged.finish = "cbe_fusion"
    with pytest.raises(ValueError, match=r"config.finish='cbe_fusion' already ends"):
        decoupled.add_stage(staged, "ncm")
    with pytest.raises(ValueError, match=r"config.finish='tau_norm' runs after the stages"):
        finish.joint_run(ml_collections.ConfigDict({"method": {"name": "tau_norm"}}), {})
    with pytest.raises(ValueError, match=r"config.finish='tau_norm' but config.method.name="
                                         r"'ncm'"):
        finish.finish_step(ml_collections.ConfigDict(
            {"method": {"name": "ncm"}, "finish": "tau_norm"}), "/unused", {})


# -- configs: the official recipes -------------------------------------------------------------


def test_configs_follow_the_official_recipes():
    x50 = load_config("imagenet_lt_ce_crt")
    assert x50.stage_order == ("joint", "crt") and x50.method.name == "crt"
    assert x50.method.base == "ce"
    joint, crt = [stage for _, stage, _ in config_lib.stage_configs(x50)]
    # feat_uniform.yaml: ResNeXt-50, linear classifier, 90 epochs, lr 0.2 at 512, wd 5e-4, cosine.
    assert (joint.method.name, joint.model.name, joint.model.head) == (
        "ce", "resnext50_32x4d", "linear")
    assert (joint.num_epochs, joint.batch_size, joint.optimizer.lr) == (90, 512, 0.2)
    assert (joint.optimizer.weight_decay, joint.optimizer.nesterov) == (5e-4, False)
    assert (joint.schedule.name, joint.schedule.warmup_epochs) == ("cosine", 0)
    assert joint.data.sampler == "shuffle" and joint.data.last_batch == "drop"
    assert joint.data.augment.color_jitter == (0.4, 0.4, 0.4, 0.0) and joint.mixup_alpha == 0
    # cls_crt.yaml: 10 epochs, lr 0.2 at 512, momentum 0.9, wd 5e-4, cosine, ClassAwareSampler.
    assert (crt.method.name, crt.num_epochs, crt.batch_size, crt.optimizer.lr) == (
        "crt", 10, 512, 0.2)
    assert (crt.optimizer.reference_batch_size, crt.optimizer.momentum,
            crt.optimizer.weight_decay, crt.optimizer.nesterov) == (512, 0.9, 5e-4, False)
    assert (crt.schedule.name, crt.schedule.warmup_epochs, crt.schedule.decay_epochs) == (
        "cosine", 0, ())
    assert crt.data.sampler == "class_balanced" and crt.data.last_batch == "drop"
    assert config_lib.stage_configs(x50)[1][2] == {"init_from": "joint"}
    lws = config_lib.stage_configs(load_config("imagenet_lt_ce_lws"))[1][1]
    assert (lws.method.name, lws.num_epochs, lws.optimizer.lr, lws.data.sampler) == (
        "lws", 5, 0.2, "class_balanced")
    tau = load_config("imagenet_lt_ce_tau_norm")
    assert (tau.finish, tau.stage_order, tau.method.tau_norm_split) == (
        "tau_norm", ("joint",), "val")
    assert tau.method.tau_norm == -1.0 and len(tau.method.tau_norm_grid) == 21
    inat_joint, inat_crt = [s for _, s, _ in config_lib.stage_configs(
        load_config("inaturalist2018_ce_crt"))]
    assert (inat_joint.model.name, inat_joint.num_epochs, inat_joint.optimizer.weight_decay) == (
        "resnet50", 90, 1e-4)
    assert inat_joint.data.augment.color_jitter == (0.0, 0.0, 0.0, 0.0)
    assert (inat_crt.num_epochs, inat_crt.optimizer.lr, inat_crt.optimizer.weight_decay) == (
        30, 0.2, 1e-4)
    assert load_config("inaturalist2018_ce_tau_norm").method.tau_norm_split == "test"
    assert decoupled.OFFICIAL_RECIPES["places_lt"]["crt"] == (10, 0.1, 256, 5e-4)
    # digits-LT: configs/digits_lt_ce.py as the joint stage, ImageNet-LT's cRT at batch 64.
    digits, ce = load_config("digits_lt_ce_crt"), load_config("digits_lt_ce")
    digits_joint, digits_crt = [s for _, s, _ in config_lib.stage_configs(digits)]
    for key in ("model", "optimizer", "schedule", "data"):
        assert digits_joint[key].to_dict() == ce[key].to_dict(), key
    assert (digits_crt.num_epochs, digits_crt.batch_size) == (10, 64)
    assert optim.base_learning_rate(digits_crt.optimizer, 64) == pytest.approx(0.025)
    ncm = load_config("digits_lt_ce_ncm")
    assert (ncm.finish, ncm.method.ncm_features, ncm.method.ncm_distance) == (
        "ncm", "cl2n", "l2")
    poe = load_config("digits_lt_balpoe_tau_norm")
    assert poe.method.base == "balpoe" and poe.method.lambdas == (1.0, 0.0, -1.0)
    assert poe.model.head == "linear" and poe.stages.joint.method.name == "balpoe"


# -- tiny runs through the command-line tools ------------------------------------------------


def _cli(*args):
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _train(name, workdir, arg="tiny=1"):
    _cli("ltx.train", f"--config={os.path.join(CONFIG_DIR, name + '.py')}:{arg}",
         f"--workdir={workdir}")
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        return json.load(f)


def _predicted(workdir, folder):
    out = _cli("ltx.cli", "predict", f"--workdir={workdir}", "--top_k=10", str(folder))
    lines = sorted(line for line in out.splitlines() if line.startswith(str(folder)))
    return [{int(c): float(p) for c, p in re.findall(r"(\d+) \(([\d.]+)\)",
                                                     line.split(": ", 1)[1])} for line in lines]


def _write_digits(folder, predictor, count=3):
    from PIL import Image
    split = predictor.dataset.test
    os.makedirs(folder, exist_ok=True)
    images = np.stack([split.source[int(i)]["image"] for i in split.indices[:count]])
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(os.path.join(folder, f"digit{i}.png"))
    return images


@pytest.mark.slow
def test_ce_then_crt_trains_only_the_head_then_evaluates_and_predicts(tmp_path):
    from ltx import predict, workdirs
    workdir = str(tmp_path / "ce_crt")
    final = _train("digits_lt_ce_crt", workdir)
    assert final["method"] == "crt" and set(final["stages"]) == {"joint", "crt"}
    joint = checkpointing.load_pretrained(os.path.join(workdir, "joint"))
    crt = checkpointing.load_pretrained(os.path.join(workdir, "crt"))
    trained_head = np.asarray(crt["params"]["experts"]["head"]["kernel"])
    assert not np.allclose(trained_head, joint["params"]["experts"]["head"]["kernel"])
    for path, value in _leaves(crt["params"]).items():  # The trunk: bit-identical.
        if not path.startswith("experts/head/"):
            np.testing.assert_array_equal(value, _leaves(joint["params"])[path], err_msg=path)
    # BatchNorm ran in train mode on the class-balanced batches, as the official code.
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(crt["batch_stats"]), jax.tree.leaves(joint["batch_stats"])))
    stage = workdirs.load_config(os.path.join(workdir, "crt"))
    assert stage.data.sampler == "class_balanced" and stage.method.name == "crt"
    # The head started from a fresh initialisation, not from the joint head.
    parts = parts_lib.build(stage)
    fresh = trainer.initial_state(stage, parts, parts_lib.make_plan(stage, parts),
                                  steps.make_mesh(), pretrained=False)
    start = trainer.initial_state(stage, parts, parts_lib.make_plan(stage, parts),
                                  steps.make_mesh())
    np.testing.assert_array_equal(start.params["experts"]["head"]["kernel"],
                                  fresh.params["experts"]["head"]["kernel"])
    np.testing.assert_array_equal(start.params["stem"]["conv"]["kernel"],
                                  joint["params"]["stem"]["conv"]["kernel"])

    _cli("ltx.cli", "eval", f"--workdir={workdir}", "--nopictures")
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        report = json.load(f)
    assert report["meta"]["method"] == "crt" and report["meta"]["prior_correction"]
    assert report["uniform"]["ensemble"]["top1_all"] == pytest.approx(final["top1_all"],
                                                                      abs=1e-3)
    predictor = predict.Predictor.from_workdir(workdir)
    images = _write_digits(tmp_path / "images", predictor.predictor)
    _, logits = predictor.logits(images)
    for printed, probs in zip(_predicted(workdir, tmp_path / "images"),
                              np_softmax(logits.astype(np.float64))):
        np.testing.assert_allclose([printed[c] for c in range(10)], probs, atol=1.5e-3)


@pytest.mark.slow
def test_balpoe_then_tau_norm_picks_tau_on_val_then_evaluates_and_predicts(tmp_path):
    from ltx import predict, workdirs
    workdir = str(tmp_path / "balpoe_tau")
    # Three epochs: a head that tau can change (one epoch leaves the sweep flat).
    final = _train("digits_lt_balpoe_tau_norm", workdir, "tiny=1,epochs=3")
    with open(os.path.join(workdir, "tau_norm.json")) as f:
        chosen = json.load(f)
    runs = workdirs.restore_stages(workdir)
    joint = runs["joint"]
    assert joint.method.name == "balpoe" and joint.method.num_experts == 3
    features, labels = finish.split_features(joint, "val")
    kernel = np.asarray(jax.device_get(joint.variables["params"])["experts"]["head"]["dense"][
        "kernel"])
    sweep = np_tau_sweep(features, kernel, labels, OFFICIAL_TAUS)
    assert len(np.unique(np.round(sweep, 6))) > 1  # The choice is not a tie of every tau.
    np.testing.assert_allclose([chosen["tau_norm_sweep"][f"{t:g}"] for t in OFFICIAL_TAUS],
                               100 * sweep, atol=1e-3)
    assert chosen["tau_norm"] == pytest.approx(OFFICIAL_TAUS[np.argmax(sweep)])
    assert final["tau_norm"] == chosen["tau_norm"] and final["method"] == "tau_norm"
    # The test prediction: the expert mean of the tau-normalised heads, no bias.
    test_features, test_labels = finish.split_features(joint, "test")
    logits = np.einsum("enf,efc->enc", test_features,
                       np_tau_normalize(kernel, chosen["tau_norm"])).mean(0)
    assert final["top1_samples"] == pytest.approx(
        100 * np.mean(logits.argmax(-1) == test_labels), abs=1e-3)

    _cli("ltx.cli", "eval", f"--workdir={workdir}", "--nopictures")
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        report = json.load(f)
    assert report["meta"]["method"] == "tau_norm" and report["meta"]["num_experts"] == 3
    assert report["uniform"]["ensemble"]["top1_all"] == pytest.approx(final["top1_all"],
                                                                      abs=1e-3)
    predictor = predict.Predictor.from_workdir(workdir)
    images = _write_digits(tmp_path / "images", predictor.predictor)
    inputs = predictor.preprocess(images)
    _, image_features = joint.model.apply(joint.variables, inputs, train=False,
                                          return_features=True)
    expected = np.einsum("ebf,efc->ebc", np.asarray(image_features, np.float64),
                         np_tau_normalize(kernel, chosen["tau_norm"])).mean(0)
    for printed, probs in zip(_predicted(workdir, tmp_path / "images"), np_softmax(expected)):
        np.testing.assert_allclose([printed[c] for c in range(10)], probs, atol=1.5e-3)


# -- helpers -----------------------------------------------------------------------------------


def _np_ce(logits, labels):
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(labels)), np.asarray(labels)])


def _trunk(head, experts):
    return models.MultiExpertResNet(num_classes=10, num_experts=experts, widths=(4, 8, 16),
                                    blocks_per_stage=1, head=head, expert_strategy="scan")


def _images(count=6):
    return np.random.default_rng(8).normal(size=(count, 8, 8, 1)).astype(np.float32)


def _init(model):
    return model.init(jax.random.key(0, impl="rbg"), jnp.zeros((2, 8, 8, 1)), train=False)


def _grads(model, variables):
    images, labels = _images(), np.arange(6) % 10

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                images, train=True, mutable=["batch_stats"])
        return _ce(logits, labels)

    return jax.device_get(jax.grad(loss)(variables["params"]))


def _ce(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, -1),
                                         jnp.asarray(labels)[None, :, None], -1))


def _norm(tree):
    return float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(tree)))


def _leaves(tree):
    return {optim.parameter_path(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(tree)}
