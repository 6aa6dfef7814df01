"""Class-balanced experts: expert datasets, the method's losses, the stages and the fusion."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from helpers import load_config, tiny_config

from ltx import config_lib, methods, models, optim, parts as parts_lib, stages, steps, trainer
from ltx.data import pipeline, splits
from ltx.methods import cbe
from ltx.methods.cbe import config as cbe_config
from ltx.methods.cbe import data as class_subsets
from ltx.methods.cbe import finish as cbe_finish
from ltx.methods.cbe.loss import outlier_exposure_loss, reject_class_labels

DIGITS_COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def _toy_dataset(num_classes=6, seed=0):
    """A dataset whose image pixels encode the source index (so batches can be traced back)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=240)
    images = np.broadcast_to(np.arange(240, dtype=np.uint8)[:, None, None, None],
                             (240, 2, 2, 1)).copy()
    source = splits.ArraySource(images, labels)
    order = rng.permutation(240)
    train, val, test = order[:160], order[160:200], order[200:]

    def split(idx):
        return splits.Split(source, np.asarray(idx, np.int64), labels[idx])

    return splits.Dataset(name="toy", num_classes=num_classes, image_shape=(2, 2, 1),
                          mean=(0.0,), std=(1.0,), train=split(train), val=split(val),
                          test=split(test),
                          class_counts=np.bincount(labels[train], minlength=num_classes))


def _data_config(**fields):
    base = dict(name="toy", expert_classes=(), expert_group="", expert_shot_convention="cbe",
                open_ratio=4, reject=True, reject_seed=3)
    base.update(fields)
    return ml_collections.ConfigDict(base)


# --------------------------------------------------------------------------------------------
# Expert datasets.
# --------------------------------------------------------------------------------------------


def test_expert_dataset_relabels_and_counts_like_numpy():
    full = _toy_dataset()
    expert = class_subsets.apply(_data_config(expert_classes=(4, 1)), full)
    assert isinstance(expert, class_subsets.ExpertDataset)
    assert expert.expert_classes == (1, 4) and expert.num_classes == 3
    table = np.array([2, 0, 2, 2, 1, 2])  # NumPy reference: 1 -> 0, 4 -> 1, others -> 2.
    np.testing.assert_array_equal(class_subsets.label_table((4, 1), 6), table)
    for split, full_split in ((expert.train, full.train), (expert.val, full.val),
                              (expert.test, full.test)):
        global_labels = np.array([full_split.source[i]["label"] for i in split.indices])
        np.testing.assert_array_equal(split.labels, table[global_labels])
        # Records read through the split's source carry the local label too.
        np.testing.assert_array_equal([split.source[i]["label"] for i in split.indices],
                                      split.labels)
    # Train: every image of the expert's classes plus floor(n_in / 4) others.
    inside = np.isin(full.train.labels, (1, 4))
    n_in = int(inside.sum())
    assert set(full.train.indices[inside]) <= set(expert.train.indices)
    np.testing.assert_array_equal(expert.class_counts,
                                  [full.class_counts[1], full.class_counts[4], n_in // 4])
    assert expert.train_open_ratio == pytest.approx(n_in / (n_in // 4))
    assert expert.fusion_open_ratio == 4.0
    # Val: open ratio 1 (as many others as the expert's images, where there are enough).
    val_inside = int(np.isin(full.val.labels, (1, 4)).sum())
    assert np.sum(expert.val.labels == 2) == min(val_inside, len(full.val) - val_inside)
    # Test: every image, the others labelled as reject.
    np.testing.assert_array_equal(expert.test.indices, full.test.indices)
    np.testing.assert_array_equal(expert.global_class_counts, full.class_counts)
    np.testing.assert_array_equal(expert.expert_mask, [False, True, False, False, True, False])
    # Picklable for grain's worker processes, and deterministic in the seed.
    clone = pickle.loads(pickle.dumps(expert.train.source))
    assert clone[int(expert.train.indices[0])]["label"] == expert.train.labels[0]
    again = class_subsets.apply(_data_config(expert_classes=(1, 4)), full)
    np.testing.assert_array_equal(again.train.indices, expert.train.indices)
    other = class_subsets.apply(_data_config(expert_classes=(1, 4), reject_seed=4), full)
    assert not np.array_equal(other.train.indices, expert.train.indices)


def test_reject_images_are_drawn_once_not_per_epoch():
    full = _toy_dataset()
    expert = class_subsets.apply(_data_config(expert_classes=(0, 2), open_ratio=8), full)
    ds = pipeline.train_dataset(expert.train, global_batch_size=8, seed=0, mean=(0.0,),
                                std=(1.0,))
    steps = 4 * len(expert.train) // 8  # Four epochs.
    seen, labels = [], []
    for k in range(steps):
        batch = ds[k]
        seen.append(np.round(batch["image"][:, 0, 0, 0] * 255).astype(int))
        labels.append(batch["label"])
    seen, labels = np.concatenate(seen), np.concatenate(labels)
    assert set(seen) == set(expert.train.indices.tolist())  # Same images every epoch.
    table = class_subsets.label_table((0, 2), 6)
    global_labels = np.array([full.train.source[int(i)]["label"] for i in seen])
    np.testing.assert_array_equal(labels, table[global_labels])


def test_outlier_exposure_keeps_every_training_image():
    full = _toy_dataset()
    expert = class_subsets.apply(_data_config(expert_classes=(3,), reject=False), full)
    assert not expert.reject and expert.num_classes == 2
    np.testing.assert_array_equal(expert.train.indices, full.train.indices)
    np.testing.assert_array_equal(expert.class_counts,
                                  [full.class_counts[3], len(full.train) - full.class_counts[3]])


def test_no_expert_classes_is_the_usual_dataset():
    full = _toy_dataset()
    assert class_subsets.apply(_data_config(), full) is full
    with pytest.raises(ValueError, match=r"lacks \['config.data.expert_classes'"):
        class_subsets.apply(ml_collections.ConfigDict({"name": "toy"}), full)


def test_shot_groups_of_the_digits_counts():
    expected = {"many": (0, 1), "medium": (2, 3, 4, 5, 6, 7), "few": (8, 9)}
    for group, classes in expected.items():
        assert class_subsets.expert_classes(_data_config(expert_group=group),
                                            DIGITS_COUNTS) == classes


@pytest.mark.parametrize("fields, message", [
    (dict(expert_classes=(0, 6)), "contains 6"),
    (dict(expert_classes=(-1,)), "contains -1"),
    (dict(expert_classes=(2, 2)), "repeats [2]"),
    (dict(expert_classes=tuple(range(6))), "all 6 classes"),
    (dict(expert_classes=(1,), expert_group="many"), "both set"),
    (dict(expert_group="tail"), "expert_group='tail'"),
    (dict(expert_classes=(1,), open_ratio=0), "open_ratio=0"),
    (dict(expert_classes=(1,), open_ratio=2.5), "open_ratio=2.5"),
    (dict(expert_classes=(1,), reject="yes"), "reject='yes'"),
])
def test_bad_data_values_raise_naming_the_value(fields, message):
    with pytest.raises(ValueError, match="config.data") as err:
        class_subsets.apply(_data_config(**fields), _toy_dataset())
    assert message in str(err.value)


def test_empty_group_raises():
    with pytest.raises(ValueError, match="'few' has no class"):
        class_subsets.expert_classes(_data_config(expert_group="few"), np.array([500, 300, 150]))


def test_bad_method_values_raise():
    with pytest.raises(ValueError, match="method.stage='router'"):
        methods.build(cbe_config.method_config(stage="router"), DIGITS_COUNTS)
    with pytest.raises(ValueError, match="method.fusion='vote'"):
        methods.build(cbe_config.method_config(fusion="vote"), DIGITS_COUNTS)
    model = config_lib.add_cifar_resnet(config_lib.base_config()).model
    with pytest.raises(ValueError, match="num_learnable=0"):
        cbe_config.trainable_pattern(model, 0)
    with pytest.raises(ValueError, match="num_learnable=6"):
        cbe_config.trainable_pattern(model, 6)  # ResNet-32 has 3 stages: at most 5.


# --------------------------------------------------------------------------------------------
# The method.
# --------------------------------------------------------------------------------------------


def _numpy_ce(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.mean(log_p[np.arange(labels.size), labels])


def test_expert_loss_is_cross_entropy_on_remapped_labels():
    rng = np.random.default_rng(0)
    mask = np.zeros(10, bool)
    mask[[2, 5, 7]] = True
    global_labels = rng.integers(0, 10, size=32)
    local = np.asarray(reject_class_labels(jnp.asarray(global_labels), mask))
    np.testing.assert_array_equal(local, class_subsets.label_table((2, 5, 7), 10)[global_labels])
    logits = rng.normal(size=(1, 32, 4)).astype(np.float32)
    counts = np.bincount(local, minlength=4)
    method = methods.build(cbe_config.method_config(stage="expert"), counts)
    outputs = methods.Outputs(jnp.asarray(logits))
    assert method.num_experts == 1
    np.testing.assert_allclose(method.loss(outputs, jnp.asarray(local), 0),
                               _numpy_ce(logits[0], local), rtol=1e-5)
    np.testing.assert_allclose(method.aggregate(outputs), logits[0])
    assert method.correct_prior is None  # An expert's classes are local: no global prior.
    # Outlier exposure on local labels is the OE loss on the global labels.
    oe = methods.build(cbe_config.method_config(stage="expert", reject=False), counts)
    expected = outlier_exposure_loss(jnp.asarray(logits[0, :, :3]), jnp.asarray(global_labels),
                                     in_expert_mask=mask, weight=0.5)
    np.testing.assert_allclose(oe.loss(outputs, jnp.asarray(local), 0), expected, rtol=1e-5)
    assert np.all(np.argmax(np.asarray(oe.aggregate(outputs)), -1) < 3)


def test_baseline_is_plain_cross_entropy_with_ce_prior_correction():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 16, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=16)
    method = methods.build(cbe_config.method_config(), DIGITS_COUNTS)
    outputs = methods.Outputs(jnp.asarray(logits))
    np.testing.assert_allclose(method.loss(outputs, jnp.asarray(labels), 0),
                               _numpy_ce(logits[0], labels), rtol=1e-5)
    uniform = np.full(10, 0.1)
    prior = DIGITS_COUNTS / DIGITS_COUNTS.sum()
    np.testing.assert_allclose(method.correct_prior(jnp.asarray(logits[0]), uniform),
                               logits[0] + np.log(uniform) - np.log(prior), rtol=1e-4,
                               atol=1e-4)


# --------------------------------------------------------------------------------------------
# Stages and frozen blocks.
# --------------------------------------------------------------------------------------------


def _parameter_paths(model_config, num_classes=3):
    model = models.build(model_config, num_classes=num_classes, num_experts=1)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0, impl="rbg"),
                                                  jnp.zeros((1, 8, 8, 1)), train=False))
    return [optim.parameter_path(p) for p, _ in
            jax.tree_util.tree_leaves_with_path(variables["params"])]


def test_digits_config_stages():
    config = load_config("digits_lt_cbe")
    built = config_lib.stage_configs(config)
    assert [name for name, _, _ in built] == ["baseline", "many", "medium", "few"]
    assert config.finish == "cbe_fusion"
    paths = _parameter_paths(config.model)
    head = {p for p in paths if p.startswith("experts/head/")}
    last_stage = {p for p in paths if p.startswith("experts/stage2/")}
    expected_classes = {"many": (0, 1), "medium": (2, 3, 4, 5, 6, 7), "few": (8, 9)}
    expected_trainable = {"many": set(paths), "medium": head | last_stage, "few": head}
    for name, stage, links in built:
        assert stage.model.head == "linear" and stage.method.name == "cbe"
        if name == "baseline":
            assert links == {} and stage.method.stage == "baseline"
            assert class_subsets.expert_classes(stage.data, DIGITS_COUNTS) is None
            continue
        assert links == {"init_from": "baseline"}
        assert stage.method.stage == "expert" and stage.data.reject and stage.method.reject
        assert stage.data.open_ratio == -1 and stage.num_epochs < config.num_epochs
        assert class_subsets.expert_classes(stage.data, DIGITS_COUNTS) == expected_classes[name]
        pattern = stage.optimizer.trainable
        mask = optim.trainable_mask({p: 0 for p in paths}, pattern) if pattern else None
        trainable = set(paths) if mask is None else {p for p in paths if mask[p]}
        assert trainable == expected_trainable[name], name
    oe = load_config("digits_lt_cbe", "reject=0")
    assert not oe.data.reject and not oe.method.reject and oe.method.fusion == "soft_voting"


def test_imagenet_trainable_patterns_name_resnet10_blocks():
    config = load_config("imagenet_lt_cbe")
    model = models.build(config.model, num_classes=5, num_experts=1)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0, impl="rbg"),
                                                  jnp.zeros((1, 32, 32, 3)), train=False))
    paths = [optim.parameter_path(p) for p, _ in
             jax.tree_util.tree_leaves_with_path(variables["params"])]
    mask = optim.trainable_mask({p: 0 for p in paths}, config.stages.medium.optimizer.trainable)
    trainable = {p for p in paths if mask[p]}
    assert trainable == {p for p in paths if p.startswith(("experts/head/", "experts/stage3/"))}
    assert config.stages.few.optimizer.trainable == r"^experts/head/"
    assert (config.batch_size, config.optimizer.lr, config.optimizer.nesterov) == (256, 0.1, False)
    places = load_config("places_lt_cbe")
    assert [places.stages[n].data.open_ratio for n in cbe_config.EXPERTS] == [16, 8, 8]
    assert places.stages.few.optimizer.trainable == places.stages.medium.optimizer.trainable
    assert (places.batch_size, places.optimizer.lr) == (32, 0.01)


def test_frozen_blocks_do_not_change_in_a_train_step(tmp_path):
    config = tiny_config("digits_lt_cbe")
    _, medium, _ = config_lib.stage_configs(config)[2]
    parts = parts_lib.build(medium)
    assert parts.dataset.num_classes == 7  # Six medium classes and the reject class.
    plan, mesh = parts_lib.make_plan(medium, parts), steps.make_mesh()
    state = trainer.initial_state(medium, parts, plan, mesh, pretrained=False)
    before = jax.device_get((state.params, state.batch_stats))
    feed, augment = trainer.make_feed(medium, parts.dataset, mesh)
    train_step = steps.make_train_step(parts.model, parts.method, plan.tx, plan.learning_rate,
                                       mesh, steps_per_epoch=plan.steps_per_epoch,
                                       batch_augment=augment)
    data = pipeline.train_iterator(trainer.train_data(medium, parts.dataset, plan.epochs))
    state, _ = train_step(state, feed(next(iter(data))), parts_lib.step_key(medium), None)
    after = jax.device_get((state.params, state.batch_stats))
    pattern = medium.optimizer.trainable
    changed = {}
    for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(before[0]),
                                jax.tree.leaves(after[0])):
        changed[optim.parameter_path(path)] = not np.array_equal(old, new)
    trainable = {p for p in changed if p.startswith(("experts/head/", "experts/stage2/"))}
    assert trainable and all(changed[p] for p in trainable)
    assert not any(changed[p] for p in changed if p not in trainable), pattern
    # As in the official code, frozen blocks still update their BatchNorm statistics.
    assert not np.array_equal(before[1]["stem"]["bn"]["mean"], after[1]["stem"]["bn"]["mean"])


# --------------------------------------------------------------------------------------------
# Fusion.
# --------------------------------------------------------------------------------------------


def _random_experts(num=120, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 10), bool)
    for k, classes in enumerate(((0, 1), (2, 3, 4, 5, 6, 7), (8, 9))):
        masks[k, list(classes)] = True
    labels = rng.integers(0, 10, size=num)
    logits = []
    for mask in masks:
        z = rng.normal(size=(num, mask.sum() + 1)).astype(np.float32)
        table = class_subsets.label_table(np.flatnonzero(mask), 10)
        z[np.arange(num), table[labels]] += 2.0  # Informative experts.
        logits.append(z)
    return logits, masks, labels


def test_oracle_is_right_wherever_a_routing_fusion_is_right():
    logits, masks, labels = _random_experts()
    params = cbe_finish.fit_fusions(
        logits, masks, labels, reject=True, open_ratios=[2.0, 6.0, 2.0],
        cfg=cbe_config.method_config(calibration_epochs=5, stacking_steps=20))
    out = cbe_finish.apply_fusions(params, logits, masks, labels, reject=True,
                                   open_ratios=[2.0, 6.0, 2.0], cfg=cbe_config.method_config())
    assert list(out) == list(cbe.FUSIONS) + ["oracle"]
    oracle_right = out["oracle"].argmax(-1) == labels
    for name in ("soft_voting", "kl_fusion", "expert_selection"):
        right = out[name].argmax(-1) == labels
        assert np.all(oracle_right[right]), name  # Same within-expert ranking, ideal routing.


@pytest.mark.slow
def test_fusion_reports_without_val_cross_fit_on_test():
    logits, masks, labels = _random_experts(seed=1)
    reports, fit_split = cbe_finish.fusion_reports(
        logits, labels, masks, DIGITS_COUNTS, reject=True, open_ratios=2.0,
        cfg=cbe_config.method_config(calibration_epochs=5, stacking_steps=20))
    assert fit_split.startswith("test (2-fold") and list(reports) == ["test"]
    assert set(reports["test"]) == set(cbe.FUSIONS) | {"oracle"}
    # Outlier-exposure experts: no reject entry, only the fusions that do not need one.
    oe = [z[:, :-1] for z in logits]
    reports, _ = cbe_finish.fusion_reports(
        oe, labels, masks, DIGITS_COUNTS, reject=False, open_ratios=2.0,
        cfg=cbe_config.method_config(stacking_steps=20), expert_val=oe, val_labels=labels)
    assert set(reports["val"]) == {"soft_voting", "expert_selection", "stacking", "oracle"}
    table = cbe_finish.format_fusion_table(reports["test"])
    assert "soft_voting" in table and "top1_few" in table


@pytest.mark.slow
def test_fuse_stages_end_to_end(tmp_path):
    config = tiny_config("digits_lt_cbe", epochs=3)  # Experts: 1 epoch each.
    workdir = str(tmp_path / "cbe")
    final = stages.train(config, workdir)
    names = list(cbe.FUSIONS) + ["oracle", "baseline"]
    for name in names:
        assert f"top1_all_{name}" in final
    assert final["fusion"] == "joint_calibration" and final["method"] == "cbe"
    assert final["top1_all"] == final["top1_all_joint_calibration"]
    assert final["num_experts"] == 3 and final["seed"] == config.seed
    assert set(final["stages"]) == {"baseline", "many", "medium", "few"}
    with open(os.path.join(workdir, "fusion.json")) as f:
        table = json.load(f)
    assert table["fit_split"] == "val"
    assert table["expert_classes"] == {"many": [0, 1], "medium": [2, 3, 4, 5, 6, 7],
                                       "few": [8, 9]}
    assert set(table["test"]) == set(names) and set(table["val"]) == set(names)
    for row in table["test"].values():
        assert set(cbe_finish.REPORT_COLUMNS) <= set(row)
    oracle = table["test"]["oracle"]["top1_all"]
    for name in ("soft_voting", "kl_fusion", "expert_selection"):
        assert oracle >= table["test"][name]["top1_all"], name
    assert table["val"]["joint_calibration"]["nll"] <= table["val"]["soft_voting"]["nll"]
