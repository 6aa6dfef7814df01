"""RIDE as a method (`ltx.methods.ride`): the loss, distillation, the router stage, stages."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from helpers import random_outputs as _outputs
from helpers import load_config, tiny_config

from ltx import config_lib, losses, methods, models, optim, stages, steps, workdirs
from ltx.methods.ride import cascade as ride_cascade
from ltx.methods.ride import config as ride_config
from ltx.methods.ride import loss as ride_losses

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def _ride(**overrides):
    cfg = ride_config.method_config(reweight_epoch=5, router_top_k=3)
    cfg.update(overrides)
    return methods.build(cfg, COUNTS)


def test_ride_loss_switches_drw_at_the_reweight_epoch():
    method = _ride()
    outputs, labels = _outputs(3)
    kwargs = dict(class_counts=COUNTS, diversity_factor=-0.45, reweight_factor=0.05)
    loss = jax.jit(method.loss)
    np.testing.assert_allclose(
        loss(outputs, labels, jnp.int32(4)),
        ride_losses.ride_loss(outputs.logits, labels, reweighting=False, **kwargs), rtol=1e-5)
    np.testing.assert_allclose(
        loss(outputs, labels, jnp.int32(5)),
        ride_losses.ride_loss(outputs.logits, labels, reweighting=True, **kwargs), rtol=1e-5)


@pytest.mark.parametrize("multiplicity,factor", [("official", 3.0), ("clean", 1.0)])
def test_distilling_from_a_teacher_equal_to_the_student_adds_no_kd_loss(multiplicity, factor):
    method = _ride(distill=True, distill_multiplicity=multiplicity)
    assert method.needs_teacher
    outputs, labels = _outputs(3, teacher=True)  # Teacher = the student's mean logits.
    plain = ride_losses.ride_loss(outputs.logits, labels, class_counts=COUNTS, reweighting=False,
                                  diversity_factor=-0.45)
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(0)), factor * plain,
                               rtol=1e-5)
    # Another teacher does add a positive term, E times under the official multiplicity.
    other = outputs._replace(teacher_logits=outputs.teacher_logits[::-1])
    kd = losses.distillation_loss(outputs.logits.mean(0), other.teacher_logits, temperature=1.5)
    assert float(kd) > 0.1
    np.testing.assert_allclose(method.loss(other, labels, jnp.int32(0)),
                               factor * (plain + kd), rtol=1e-5)


def test_router_stage_loss_and_cascade_aggregate():
    method = _ride(stage="router", router_threshold=0.5)
    assert method.trainable == r"^router/"
    assert method.model_additions["router"] == "cascade"
    outputs, labels = _outputs(3, router=2)
    expected = ride_losses.routing_loss(
        outputs.router.T, ride_losses.routing_targets(outputs.logits, labels), pos_weight=100.0)
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(0)), expected, rtol=1e-6)
    np.testing.assert_allclose(method.aggregate(outputs),
                               ride_cascade.ride_cascade(outputs.logits, outputs.router.T, 0.5)[0])
    everyone = _ride(stage="router", router_threshold=0.0).aggregate(outputs)
    first = _ride(stage="router", router_threshold=1.0).aggregate(outputs)
    np.testing.assert_allclose(everyone, outputs.logits.mean(0), rtol=1e-6)
    np.testing.assert_allclose(first, outputs.logits[0], rtol=1e-6)


def _tiny_model(**overrides):
    return models.MultiExpertResNet(num_classes=10, num_experts=3, widths=(4, 6, 8),
                                    blocks_per_stage=1, expert_strategy="vmap", **overrides)


def test_router_stage_trains_only_the_router_and_keeps_batchnorm_statistics():
    method = _ride(stage="router")
    model = method.model(_tiny_model())
    lr = optim.learning_rate_schedule(ml_collections.ConfigDict(dict(
        name="constant", warmup_epochs=0, decay_epochs=(), decay_factor=0.1,
        granularity="epoch")), base_lr=0.1, num_epochs=1, steps_per_epoch=1)
    opt = config_lib.base_config().optimizer
    tx = optim.make_optimizer(opt, lr, trainable=method.trainable)
    mesh = steps.make_mesh()
    state = steps.create_train_state(jax.random.key(0, impl="rbg"), model, tx, (8, 8, 1), mesh)
    before = jax.device_get(state)
    step = steps.make_train_step(model, method, tx, lr, mesh)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 16).astype(np.int32)}
    for _ in range(2):
        state, _ = step(state, batch, jax.random.key(1), None)
    after = jax.device_get(state)
    for path, old in jax.tree_util.tree_leaves_with_path(before.params):
        new = after.params
        for key in path:
            new = new[key.key]
        name = optim.parameter_path(path)
        if name.startswith("router/"):
            assert np.abs(new - old).max() > 0, name
        else:
            np.testing.assert_array_equal(new, old, err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, after.batch_stats, before.batch_stats)


def test_stage_configs_merge_overrides_and_check_links():
    config = load_config("digits_lt_ride", "distill=1")
    names = [name for name, _, _ in config_lib.stage_configs(config)]
    assert names == ["teacher", "experts", "router"]
    (_, teacher, _), (_, experts, experts_links), (_, router, router_links) = (
        config_lib.stage_configs(config))
    assert teacher.method.num_experts == 6 and experts.method.num_experts == 3
    assert experts_links == {"teacher_from": "teacher"} and experts.method.distill
    assert router_links == {"init_from": "experts"}
    assert router.method.stage == "router" and router.data.sampler == "class_balanced"
    assert router.num_epochs == 5 and router.optimizer.lr == 0.01
    assert router.data.imbalance_ratio == config.data.imbalance_ratio  # Untouched fields kept.
    config.stages.router.init_from = "router"
    with pytest.raises(ValueError, match="init_from='router'; expected one of the stages before"):
        config_lib.stage_configs(config)
    config.stage_order = ("teacher", "experts")
    with pytest.raises(ValueError, match=r"config.stages has \['router'\]"):
        config_lib.stage_configs(config)


def test_stage_overrides_with_unknown_keys_are_named():
    config = load_config("digits_lt_ride")
    config.stages.router.num_epoch = 10  # Misspelt num_epochs.
    config.stages.router.optimizer.learning_rate = 0.1
    with pytest.raises(ValueError) as err:
        config_lib.stage_configs(config)
    assert "config.stages.router.num_epoch" in str(err.value)
    assert "config.stages.router.optimizer.learning_rate" in str(err.value)


@pytest.mark.slow
def test_ride_stages_end_to_end_report_cascade_costs_and_resume(tmp_path):
    config = tiny_config("digits_lt_ride", epochs=1, arg="distill=1")  # Stages of 1 epoch.
    workdir = str(tmp_path / "ride")
    final = stages.train(config, workdir)
    assert set(final["stages"]) == {"teacher", "experts", "router"}
    assert 1.0 <= final["avg_experts"] <= 3.0
    for group in ("many", "medium", "few"):
        assert 1.0 <= final[f"avg_experts_{group}"] <= 3.0
    assert sum(final[f"frac_experts_{k}"] for k in (1, 2, 3)) == pytest.approx(1.0)
    run = workdirs.restore_run(os.path.join(workdir, "router"))
    from ltx.methods import ride
    trunk, branch = ride.expert_flops(run.config.model, run.dataset.num_classes,
                                      run.dataset.image_shape)
    assert trunk > 0 and branch > 0
    assert final["gflops_per_image"] == pytest.approx(trunk + final["avg_experts"] * branch)
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        assert json.load(f)["top1_all"] == pytest.approx(final["top1_all"])
    # Relaunching finds every stage done and trains nothing.
    mtime = os.path.getmtime(os.path.join(workdir, "router", "final_metrics.json"))
    again = stages.train(config, workdir)
    assert os.path.getmtime(os.path.join(workdir, "router", "final_metrics.json")) == mtime
    assert again["top1_all"] == pytest.approx(final["top1_all"])
