"""ACE as a method: planner, stop-gradient experts, expert learning rates, aggregation, configs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from helpers import load_config, tiny_config

from ltx import config_lib, methods, models, optim, trainer
from ltx.methods import ace
from ltx.methods.ace import loss as ace_losses

# Residual shares r_j = 1, .533, .252, .112, .037: (0.4, 0.1) splits at j = 1 and 3.
COUNTS = np.array([50, 30, 15, 8, 4])
THRESHOLDS = (0.4, 0.1)


def _method_config(thresholds=THRESHOLDS, **fields):
    return ml_collections.ConfigDict({"name": "ace", "thresholds": thresholds,
                                      "lr_scaling": "linear", **fields})


def _numpy_plan(counts, thresholds):
    """The planner in plain NumPy: rank by count, cut at the last rank with residual share > e."""
    counts = np.asarray(counts, np.float64)
    order = np.argsort(-counts, kind="stable")
    ranked = counts[order]
    residual = np.array([ranked[j:].sum() for j in range(ranked.size)]) / ranked.sum()
    splits = [max(j for j in range(ranked.size) if residual[j] > e) for e in thresholds]
    masks = [np.ones(counts.size, bool)]
    for j in splits:
        mask = np.zeros(counts.size, bool)
        mask[order[j:]] = True
        masks.append(mask)
    shares = [1.0] + [residual[j] for j in splits]
    return np.stack(masks), np.array(shares), splits


def test_planner_matches_numpy_and_handles_any_class_order():
    masks, shares = ace.plan(COUNTS, THRESHOLDS)
    expected_masks, expected_shares, splits = _numpy_plan(COUNTS, THRESHOLDS)
    assert splits == [1, 3]
    np.testing.assert_array_equal(masks, expected_masks)
    np.testing.assert_allclose(shares, expected_shares, rtol=1e-12)
    np.testing.assert_array_equal(masks, ace_losses.ace_split(COUNTS, THRESHOLDS))
    # Unsorted labels: the masks follow the classes (by frequency rank), not index ranges.
    perm = np.array([3, 0, 4, 2, 1])
    masks_p, shares_p = ace.plan(COUNTS[perm], THRESHOLDS)
    np.testing.assert_array_equal(masks_p, masks[:, perm])
    np.testing.assert_allclose(shares_p, shares, rtol=1e-12)
    # CIFAR-100-LT ratio 100 with the released thresholds: j = (25, 68), 30.4% and 3.2%.
    from ltx.data import long_tail
    cifar = long_tail.long_tail_counts(500, 100, 100.0)
    masks, shares = ace.plan(cifar, (0.3, 0.03))
    assert [int(np.argmax(m)) for m in masks] == [0, 25, 68]
    np.testing.assert_allclose(shares[1:], [0.3039, 0.0319], atol=5e-4)


# -- (1) only expert 0's loss reaches the shared trunk ----------------------------------------


def _tiny_model(method, num_classes, *, overrides=True):
    c = config_lib.add_cifar_resnet(config_lib.base_config()).model
    c.widths, c.blocks_per_stage, c.strides = (4, 8, 8), 1, (1, 2, 2)
    c.num_shared_stages, c.head = 2, "lws"
    trunk = models.build(c, num_classes=num_classes, num_experts=method.num_experts)
    return method.model(trunk) if overrides else trunk


def _per_expert_loss_jacobian(model, masks, images, labels):
    variables = model.init(jax.random.key(0, impl="rbg"), images, train=False)

    @jax.jit
    def jacobian(params):
        def expert_losses(p):
            logits, _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                    images, train=True, mutable=["batch_stats"])
            return ace_losses.ace_expert_losses(logits, labels, target_masks=masks)
        return jax.jacrev(expert_losses)(params)

    return jacobian(variables["params"])


def _shared_and_branch_norms(jac, num_experts):
    """|dL_k/d shared|_1 [E] and |dL_k/d branch_j|_1 [E, E] from a Jacobian with leading [E]."""
    shared, branch = np.zeros(num_experts), np.zeros((num_experts, num_experts))
    for path, leaf in jax.tree_util.tree_leaves_with_path(jac):
        leaf = np.abs(np.asarray(leaf, np.float64))
        if optim.parameter_path(path).startswith("experts/"):
            branch += leaf.reshape(num_experts, num_experts, -1).sum(-1)
        else:
            shared += leaf.reshape(num_experts, -1).sum(-1)
    return shared, branch


@pytest.mark.slow
def test_only_the_all_class_expert_trains_the_shared_trunk():
    method = methods.build(_method_config(), COUNTS)
    assert method.model_additions == {"head": "lws", "stop_gradient_experts": (1, 2)}
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(10, 8, 8, 3)), jnp.float32)
    labels = jnp.asarray(np.arange(10) % 5)
    masks, _ = ace.plan(COUNTS, THRESHOLDS)

    model = _tiny_model(method, 5)
    shared, branch = _shared_and_branch_norms(
        _per_expert_loss_jacobian(model, masks, images, labels), 3)
    assert shared[0] > 0
    assert shared[1] == 0.0 and shared[2] == 0.0  # Exactly zero: stop_gradient.
    # Each expert's loss trains its own branch only.
    assert np.all(np.diag(branch) > 0)
    assert np.all(branch[~np.eye(3, dtype=bool)] == 0.0)

    # Without the override the tail experts' losses would reach the trunk.
    plain = _tiny_model(method, 5, overrides=False)
    shared_plain, _ = _shared_and_branch_norms(
        _per_expert_loss_jacobian(plain, masks, images, labels), 3)
    assert np.all(shared_plain > 0)


# -- (2) the distribution-adaptive optimizer ----------------------------------------------------


@pytest.mark.parametrize("lr_scaling", ["linear", "sqrt", "uniform", "threshold"])
def test_expert_learning_rates_follow_the_shares(lr_scaling):
    method = methods.build(_method_config(lr_scaling=lr_scaling), COUNTS)
    _, shares, _ = _numpy_plan(COUNTS, THRESHOLDS)
    expected = {"linear": shares, "sqrt": np.sqrt(shares), "uniform": np.ones(3),
                "threshold": np.array([1.0, *THRESHOLDS])}[lr_scaling]
    np.testing.assert_allclose(method.expert_lr_scales, expected, rtol=1e-12)
    assert method.expert_lr_scales[0] == 1.0

    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(4, 5)).astype(np.float32)
    params = {"stem": {"w": jnp.ones((3,))},
              "experts": {"head": {"kernel": jnp.asarray(np.stack([kernel] * 3))}}}
    grads = {"stem": {"w": jnp.asarray(rng.normal(size=3), jnp.float32)},
             "experts": {"head": {"kernel": jnp.asarray(np.stack([rng.normal(size=(4, 5))] * 3),
                                                        jnp.float32)}}}
    cfg = config_lib.base_config().optimizer  # SGD, momentum 0.9, Nesterov, wd 5e-4.
    tx = optim.make_optimizer(cfg, optax.constant_schedule(0.1),
                              expert_lr_scales=method.expert_lr_scales)
    plain = optim.make_optimizer(cfg, optax.constant_schedule(0.1))
    state, plain_state = tx.init(params), plain.init(params)
    for _ in range(2):  # The second step goes through the momentum buffer.
        updates, state = tx.update(grads, state, params)
        reference, plain_state = plain.update(grads, plain_state, params)
        u = np.asarray(updates["experts"]["head"]["kernel"])
        for k in range(3):
            np.testing.assert_allclose(u[k], expected[k] * u[0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(u[0], reference["experts"]["head"]["kernel"][0], rtol=1e-6)
        np.testing.assert_allclose(updates["stem"]["w"], reference["stem"]["w"], rtol=1e-6)


# -- (3) aggregation ----------------------------------------------------------------------------


def _numpy_group_average(z, kernels, j1, j2, rescale=True):
    """docs/methods/ace.md on count-sorted classes: z0 | (z0 + m z1)/2 | (z0 + m z1 + f z2)/3."""
    z, w = np.asarray(z, np.float64), np.asarray(kernels, np.float64)
    norms = np.linalg.norm(w, axis=1)  # [E, C]
    m = norms[0].mean() / norms[1, j1:].mean() if rescale else 1.0
    f = norms[0].mean() / norms[2, j2:].mean() if rescale else 1.0
    out = np.empty_like(z[0])
    out[:, :j1] = z[0, :, :j1]
    out[:, j1:j2] = (z[0, :, j1:j2] + m * z[1, :, j1:j2]) / 2
    out[:, j2:] = (z[0, :, j2:] + m * z[1, :, j2:] + f * z[2, :, j2:]) / 3
    return out


def _head_params(rng, features=6, classes=5):
    return {"experts": {"head": {
        "kernel": jnp.asarray(rng.normal(size=(3, features, classes)) *
                              np.array([1.0, 2.0, 3.5])[:, None, None], jnp.float32),
        "bias": jnp.asarray(rng.normal(size=(3, classes)), jnp.float32),
        "scales": jnp.asarray(rng.uniform(0.5, 2.0, size=(3, classes)), jnp.float32)}}}


def test_aggregate_is_the_group_average_with_weight_norm_rescaling():
    method = methods.build(_method_config(), COUNTS)
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(3, 7, 5)) * 5, jnp.float32)
    params = _head_params(rng)
    outputs = methods.Outputs(logits)
    kernels = params["experts"]["head"]["kernel"]
    expected = _numpy_group_average(logits, kernels, 1, 3)
    np.testing.assert_allclose(method.aggregate(outputs, params), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(method.aggregate)(outputs, params), expected, rtol=1e-5,
                               atol=1e-5)
    # The training log: m = f = 1.
    np.testing.assert_allclose(method.aggregate(outputs),
                               _numpy_group_average(logits, kernels, 1, 3, rescale=False),
                               rtol=1e-5, atol=1e-5)
    # The LWS scales play no part in the rescaling.
    rescaled = {"experts": {"head": dict(params["experts"]["head"],
                                         scales=params["experts"]["head"]["scales"] * 3.0)}}
    np.testing.assert_allclose(method.aggregate(outputs, rescaled), expected, rtol=1e-5,
                               atol=1e-5)
    # Classes in another order: the same prediction, permuted.
    perm = np.array([3, 0, 4, 2, 1])
    permuted = methods.build(_method_config(), COUNTS[perm])
    params_p = jax.tree.map(lambda x: x[..., perm], params)
    np.testing.assert_allclose(permuted.aggregate(methods.Outputs(logits[..., perm]), params_p),
                               expected[:, perm], rtol=1e-5, atol=1e-5)


def test_aggregate_needs_the_lws_kernels():
    method = methods.build(_method_config(), COUNTS)
    outputs = methods.Outputs(jnp.zeros((3, 2, 5)))
    with pytest.raises(ValueError, match=r"params\['experts'\]\['head'\]\['kernel'\]"):
        method.aggregate(outputs, {"experts": {"head": {"dense": {}}}})


def test_prior_correction_adds_the_log_prior():
    method = methods.build(_method_config(), COUNTS)
    logits = jnp.asarray(np.random.default_rng(3).normal(size=(4, 5)), jnp.float32)
    prior = COUNTS / COUNTS.sum()
    np.testing.assert_allclose(method.correct_prior(logits, prior), logits + np.log(prior),
                               rtol=1e-5, atol=1e-6)


# -- (4) the loss -------------------------------------------------------------------------------


def test_loss_is_ace_loss():
    method = methods.build(_method_config(), COUNTS)
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(3, 12, 5)) * 4, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, 12))
    masks, _ = ace.plan(COUNTS, THRESHOLDS)
    expected = ace_losses.ace_loss(logits, labels, target_masks=masks)
    loss = jax.jit(method.loss)
    for epoch in (0, 7):
        np.testing.assert_allclose(loss(methods.Outputs(logits), labels, jnp.int32(epoch)),
                                   expected, rtol=1e-6)


# -- (5) configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize("fields, match", [
    (dict(lr_scaling="cubic"), "lr_scaling='cubic'"),
    (dict(thresholds=(0.1, 0.4)), r"thresholds=\(0.1, 0.4\).*strictly decreasing"),
    (dict(thresholds=(0.4, 0.4)), r"thresholds=\(0.4, 0.4\).*strictly decreasing"),
    (dict(thresholds=(1.2, 0.1)), r"1.2.*outside \[0, 1\)"),
    (dict(thresholds=(0.4, -0.1)), r"-0.1.*outside \[0, 1\)"),
    (dict(thresholds="many"), "thresholds='many'"),
    (dict(thresholds=(0.5, 0.45)), r"thresholds=\(0.5, 0.45\) give experts 1 and 2 the same"),
    (dict(thresholds=(0.6, 0.1)), r"thresholds=\(0.6, 0.1\) give experts 0 and 1 the same"),
    (dict(num_experts=4), "num_experts=4 but method 'ace' builds 3"),
])
def test_bad_config_values_raise(fields, match):
    with pytest.raises(ValueError, match=match):
        methods.build(_method_config(**fields), COUNTS)


def test_missing_thresholds_and_bad_counts_raise():
    with pytest.raises(ValueError, match="thresholds is missing"):
        methods.build(ml_collections.ConfigDict(dict(name="ace")), COUNTS)
    with pytest.raises(ValueError, match="class_counts"):
        methods.build(_method_config(), np.array([5, -1, 3]))


def test_stop_gradient_experts_need_a_shared_trunk():
    method = methods.build(_method_config(), COUNTS)
    c = config_lib.add_cifar_resnet(config_lib.base_config()).model
    c.num_shared_stages = 0
    with pytest.raises(ValueError, match="needs a shared trunk"):
        method.model(models.build(c, num_classes=5, num_experts=3))


# -- (6) configs --------------------------------------------------------------------------------


def test_cifar_configs_follow_the_released_recipes():
    ir100, ir50 = load_config("cifar100_lt_ace", "ir=100"), load_config("cifar100_lt_ace", "ir=50")
    assert ir100.method.thresholds == (0.3, 0.03) and ir50.method.thresholds == (0.4, 0.1)
    assert (ir100.num_epochs, ir100.batch_size, ir100.optimizer.weight_decay) == (280, 128, 5e-4)
    assert ir100.mixup_alpha == 0.0 and ir100.schedule.warmup_epochs == 0
    assert ir50.mixup_alpha == 0.3 and ir50.mixup_epochs == 259
    assert ir50.schedule.warmup_epochs == 10 and ir100.schedule.decay_epochs == (200, 240)
    assert ir100.model.num_shared_stages == 2 and ir100.model.head == "lws"
    assert ir100.eval.shot_convention == "ace"
    assert load_config("cifar100_lt_ace", "ir=10").method.thresholds == (0.4, 0.1)


def test_large_scale_configs_follow_the_released_recipes():
    r50, r10 = load_config("imagenet_lt_ace"), load_config("imagenet_lt_ace", "arch=resnet10")
    assert (r50.num_epochs, r50.optimizer.lr, r50.schedule.decay_epochs) == (220, 0.1, (140, 180))
    assert (r10.num_epochs, r10.optimizer.lr, r10.schedule.decay_epochs) == (200, 0.08,
                                                                            (120, 160))
    assert (r50.mixup_epochs, r10.mixup_epochs) == (199, 179)
    assert r50.model.num_shared_stages == 3 and r50.batch_size == 256
    inat = load_config("inaturalist2018_ace")
    assert (inat.num_epochs, inat.batch_size, inat.optimizer.lr) == (220, 512, 0.1)
    with pytest.raises(ValueError, match="arch='resnet152'"):
        load_config("imagenet_lt_ace", "arch=resnet152")


@pytest.mark.slow
def test_digits_config_trains_end_to_end_with_the_mixup_tail(tmp_path):
    config = tiny_config("digits_lt_ace", epochs=3, arg="mixup=0.3")
    # 55 of 60 epochs rounded down: epochs 0-1 mixed, the last unmixed.
    assert config.mixup_epochs == 2 and config.num_epochs == 3
    full = load_config("digits_lt_ace")
    assert full.schedule.decay_epochs == (43, 51) and full.mixup_epochs == -1
    assert load_config("digits_lt_ace", "mixup=0.3").mixup_epochs == 55  # 5 mixup-free epochs.
    final, _ = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert final["method"] == "ace" and np.isfinite(final["nll"])


def test_digits_config_takes_the_ratio_100_thresholds_at_ratio_100():
    # At ratio 100 the ratio-50 rule leaves expert 1 a single interfering class (its unscaled
    # suppression norm diverged every seed); the ratio-100 rule (0.3, 0.03) gives it two.
    counts = np.array([134, 80, 48, 28, 17, 10, 6, 3, 2, 1])
    assert load_config("digits_lt_ace").method.thresholds == (0.4, 0.1)
    config = load_config("digits_lt_ace", "ir=100")
    assert config.method.thresholds == (0.3, 0.03)
    masks, shares = ace.plan(counts, config.method.thresholds)
    np.testing.assert_array_equal(np.flatnonzero(masks[1]), np.arange(2, 10))
    np.testing.assert_array_equal(np.flatnonzero(masks[2]), np.arange(6, 10))
    np.testing.assert_allclose(shares[2], 12 / 329)
    ratio_50, _ = ace.plan(counts, (0.4, 0.1))
    assert (~ratio_50[1]).sum() == 1
