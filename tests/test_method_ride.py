"""RIDE and ALA + MoE: losses as composed by the methods, the router stage, distillation, stages."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ltx import config_lib, fusion, losses, methods, models, optim, stages, trainer

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def _outputs(experts, seed=0, router=None, teacher=False):
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-30, 30, size=(experts, 16, 10)).astype(np.float32)
    router_out = None if router is None else rng.normal(size=(16, router)).astype(np.float32)
    teacher_logits = logits.mean(0) if teacher else None
    return methods.Outputs(logits, router_out, teacher_logits), rng.integers(0, 10, 16)


def _ride(**overrides):
    cfg = config_lib.ride_method(reweight_epoch=5, router_top_k=3)
    cfg.update(overrides)
    return methods.build(cfg, COUNTS)


def test_ride_loss_switches_drw_at_the_reweight_epoch():
    method = _ride()
    outputs, labels = _outputs(3)
    kwargs = dict(class_counts=COUNTS, diversity_factor=-0.45, reweight_factor=0.05)
    loss = jax.jit(method.loss)
    np.testing.assert_allclose(
        loss(outputs, labels, jnp.int32(4)),
        losses.ride_loss(outputs.logits, labels, reweighting=False, **kwargs), rtol=1e-5)
    np.testing.assert_allclose(
        loss(outputs, labels, jnp.int32(5)),
        losses.ride_loss(outputs.logits, labels, reweighting=True, **kwargs), rtol=1e-5)


@pytest.mark.parametrize("multiplicity,factor", [("official", 3.0), ("clean", 1.0)])
def test_distilling_from_a_teacher_equal_to_the_student_adds_no_kd_loss(multiplicity, factor):
    method = _ride(distill=True, distill_multiplicity=multiplicity)
    assert method.needs_teacher
    outputs, labels = _outputs(3, teacher=True)  # Teacher = the student's mean logits.
    plain = losses.ride_loss(outputs.logits, labels, class_counts=COUNTS, reweighting=False,
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
    assert method.model_overrides["router"] == "cascade"
    outputs, labels = _outputs(3, router=2)
    expected = losses.routing_loss(outputs.router.T, losses.routing_targets(outputs.logits, labels),
                                   pos_weight=100.0)
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(0)), expected, rtol=1e-6)
    np.testing.assert_allclose(method.aggregate(outputs),
                               fusion.ride_cascade(outputs.logits, outputs.router.T, 0.5)[0])
    everyone = _ride(stage="router", router_threshold=0.0).aggregate(outputs)
    first = _ride(stage="router", router_threshold=1.0).aggregate(outputs)
    np.testing.assert_allclose(everyone, outputs.logits.mean(0), rtol=1e-6)
    np.testing.assert_allclose(first, outputs.logits[0], rtol=1e-6)


def _tiny_model(**overrides):
    return models.MultiExpertResNet(num_classes=10, num_experts=3, widths=(4, 6, 8),
                                    blocks_per_stage=1, expert_strategy="vmap", **overrides)


def test_router_stage_trains_only_the_router_and_keeps_batchnorm_statistics():
    method = _ride(stage="router")
    model = _tiny_model(**method.model_overrides)
    lr = optim.learning_rate_schedule(ml_collections.ConfigDict(dict(
        name="constant", warmup_epochs=0, decay_epochs=(), decay_factor=0.1,
        granularity="epoch")), base_lr=0.1, num_epochs=1, steps_per_epoch=1)
    opt = config_lib.base_config().optimizer
    tx = optim.make_optimizer(opt, lr, trainable=method.trainable)
    mesh = trainer.make_mesh()
    state = trainer.create_train_state(jax.random.key(0, impl="rbg"), model, tx, (8, 8, 1), mesh)
    before = jax.device_get(state)
    step = trainer.make_train_step(model, method, tx, lr, mesh)
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


def test_ala_moe_router_learns_only_after_the_router_epoch():
    cfg = config_lib.ala_moe_method(router_epoch=3, drw_epoch=100)
    method = methods.build(cfg, COUNTS)
    outputs, labels = _outputs(3, router=3)
    outputs = outputs._replace(logits=np.clip(outputs.logits, -29, 29))  # s * cos, |cos| < 1.
    experts = losses.ala_loss(outputs.logits, labels, class_counts=COUNTS)
    weights = jax.nn.softmax(outputs.router, -1)
    combined = np.einsum("ebc,be->bc", outputs.logits, weights)
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(2)), experts, rtol=1e-5)
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(3)),
                               experts + losses.ala_loss(combined, labels, class_counts=COUNTS),
                               rtol=1e-5)
    np.testing.assert_allclose(method.aggregate(outputs), combined, rtol=1e-5, atol=1e-4)

    def router_grad(epoch):
        return jax.grad(lambda r: method.loss(outputs._replace(router=r), labels,
                                              jnp.int32(epoch)))(jnp.asarray(outputs.router))
    assert float(jnp.abs(router_grad(2)).max()) == 0.0
    assert float(jnp.abs(router_grad(3)).max()) > 0.0

    distill = methods.build(ml_collections.ConfigDict(dict(cfg, stage="distill", num_experts=1)),
                            COUNTS)
    single, labels = _outputs(1, seed=3, teacher=True)
    single = single._replace(logits=np.clip(single.logits, -29, 29),
                             teacher_logits=np.clip(single.teacher_logits, -29, 29))
    np.testing.assert_allclose(distill.loss(single, labels, jnp.int32(0)),
                               losses.ala_loss(single.logits[0], labels, class_counts=COUNTS),
                               rtol=1e-5)


def test_stage_configs_merge_overrides_and_check_links():
    config = config_lib.load_config_file(os.path.join(CONFIG_DIR, "digits_lt_ride.py"),
                                         "distill=1")
    names = [name for name, _, _ in stages.stage_configs(config)]
    assert names == ["teacher", "experts", "router"]
    (_, teacher, _), (_, experts, experts_links), (_, router, router_links) = (
        stages.stage_configs(config))
    assert teacher.method.num_experts == 6 and experts.method.num_experts == 3
    assert experts_links == {"teacher_from": "teacher"} and experts.method.distill
    assert router_links == {"init_from": "experts"}
    assert router.method.stage == "router" and router.data.sampler == "class_balanced"
    assert router.num_epochs == 5 and router.optimizer.lr == 0.01
    assert router.data.imbalance_ratio == config.data.imbalance_ratio  # Untouched fields kept.
    config.stages.router.init_from = "router"
    with pytest.raises(ValueError, match="init_from='router'; expected one of the stages before"):
        stages.stage_configs(config)
    config.stage_order = ("teacher", "experts")
    with pytest.raises(ValueError, match=r"config.stages has \['router'\]"):
        stages.stage_configs(config)


def _tiny_stages(config, workdir):
    config.model.widths = (4, 6, 8)
    config.model.blocks_per_stage = 1
    config.checkpoint.async_save = False
    config.log_every_steps = 1000
    return stages.train(config, workdir)


def test_ride_stages_end_to_end_report_cascade_costs_and_resume(tmp_path):
    config = config_lib.load_config_file(os.path.join(CONFIG_DIR, "digits_lt_ride.py"),
                                         "epochs=1,distill=1")
    config.stages.router.num_epochs = 1
    workdir = str(tmp_path / "ride")
    final = _tiny_stages(config, workdir)
    assert set(final["stages"]) == {"teacher", "experts", "router"}
    assert 1.0 <= final["avg_experts"] <= 3.0
    for group in ("many", "medium", "few"):
        assert 1.0 <= final[f"avg_experts_{group}"] <= 3.0
    assert sum(final[f"frac_experts_{k}"] for k in (1, 2, 3)) == pytest.approx(1.0)
    run = trainer.Run(stages.stage_configs(config)[-1][1], os.path.join(workdir, "router"))
    from ltx.methods import ride
    trunk, branch = ride.expert_flops(run)
    assert trunk > 0 and branch > 0
    assert final["gflops_per_image"] == pytest.approx(trunk + final["avg_experts"] * branch)
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        assert json.load(f)["top1_all"] == pytest.approx(final["top1_all"])
    # Relaunching finds every stage done and trains nothing.
    mtime = os.path.getmtime(os.path.join(workdir, "router", "final_metrics.json"))
    again = _tiny_stages(config, workdir)
    assert os.path.getmtime(os.path.join(workdir, "router", "final_metrics.json")) == mtime
    assert again["top1_all"] == pytest.approx(final["top1_all"])
