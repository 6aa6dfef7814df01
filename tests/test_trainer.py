"""The trainer: sharding invariance, resume equals an uninterrupted run, mismatch errors, learning.

conftest.py gives the session four fake CPU devices.
"""

import json
import os
import subprocess
import sys
import threading
import types

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from helpers import (CONFIG_DIR, assert_trees_close, load_config, restore_state,
                     wrap_train_steps)
from helpers import tiny_config as tiny

from ltx import checkpointing, methods, models, optim, parts as parts_lib, steps, trainer
from ltx.data import device_augment, digits, splits


def tiny_config(epochs=2):
    """The tiny digits-LT BalPoE with Mixup, checkpoints and evaluation every epoch."""
    c = tiny(epochs=epochs, arg="mixup=0.4")
    c.checkpoint.every_epochs = 1
    c.eval.every_epochs = 1
    c.log_every_steps = 4
    return c


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True])
def test_train_step_on_four_devices_equals_one_device(on_device):
    """Also with the augmentation in the step (its draws cover the global batch)."""
    assert jax.device_count() >= 4, "conftest.py should give four fake CPU devices"
    config = tiny_config()
    dataset = digits.digits_lt(imbalance_ratio=10)
    method = methods.build(config.method, dataset.class_counts)
    model = models.build(config.model, num_classes=10, num_experts=method.num_experts)
    lr = optim.learning_rate_schedule(config.schedule, base_lr=0.1, num_epochs=2,
                                      steps_per_epoch=4)
    tx = optim.make_optimizer(config.optimizer, lr)
    rng = np.random.default_rng(0)
    batches = [{"image": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
                "label": rng.integers(0, 10, 16).astype(np.int32),
                "mask": np.ones(16, bool)} for _ in range(3)]
    # An epoch's smaller last batch: 9 real rows, so the fourth device holds only padding.
    batches[-1]["mask"] = np.arange(16) < 9
    source = np.stack([dataset.train.source[int(i)]["image"] for i in dataset.train.indices])
    augment = None
    if on_device:
        for batch in batches:
            batch["index"] = rng.integers(0, len(source), 16).astype(np.int32)
            del batch["image"]
        augment = device_augment.make_batch_augment(config.data.augment, mean=dataset.mean,
                                                    std=dataset.std)

    results = []
    for devices in (jax.devices()[:1], jax.devices()[:4]):
        mesh = steps.make_mesh(devices)
        state = steps.create_train_state(jax.random.key(0, impl="rbg"), model, tx, (8, 8, 1),
                                           mesh)
        step = steps.make_train_step(model, method, tx, lr, mesh, mixup_alpha=0.4,
                                       batch_augment=augment)
        data_sharding = NamedSharding(mesh, P("data"))
        images = jax.device_put(source, NamedSharding(mesh, P()))
        losses = []
        for batch in batches:
            batch = jax.device_put(batch, data_sharding)
            if on_device:
                batch["source"] = images
            state, metrics = step(state, batch, jax.random.key(1), None)
            losses.append(float(metrics["loss_sum"]))
        assert len(state.params["stem"]["conv"]["kernel"].sharding.device_set) == len(devices)
        results.append((jax.device_get(state), losses))

    (state1, losses1), (state4, losses4) = results
    np.testing.assert_allclose(losses1, losses4, rtol=1e-5)
    assert int(state1.step) == int(state4.step) == 3
    assert_trees_close(state1.params, state4.params, rtol=1e-4, atol=1e-6)
    assert_trees_close(state1.batch_stats, state4.batch_stats, rtol=1e-4, atol=1e-6)
    # The steps did move the parameters: a step that did nothing would also "agree".
    initial = jax.device_get(steps.create_train_state(
        jax.random.key(0, impl="rbg"), model, tx, (8, 8, 1), steps.make_mesh()))
    moved = np.abs(np.asarray(state1.params["stem"]["conv"]["kernel"])
                   - np.asarray(initial.params["stem"]["conv"]["kernel"])).max()
    assert moved > 1e-3


class _Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True])
def test_resume_after_a_stop_gives_the_uninterrupted_state(tmp_path, on_device, monkeypatch):
    config = tiny_config(epochs=2)
    config.data.augment.on_device = on_device  # Host pipeline, or augmentation in the step.
    parts = parts_lib.build(config)
    first = trainer.train_data(config, parts.dataset, parts_lib.make_plan(config, parts).epochs)
    assert ("index" in first[0]) == on_device
    final_straight, _ = trainer.train_and_evaluate(config, str(tmp_path / "straight"))

    calls = []

    def stop_after_12(step_fn):
        def step(state, batch, rng, teacher_variables):
            # 544 images / 64: 9 steps per epoch, the ninth of 32 images; the epoch-1
            # checkpoint is at step 9 and the stop mid-way through the second epoch, so the
            # iterator position must be restored.
            if len(calls) == 12:
                raise _Interrupt()
            calls.append(1)
            return step_fn(state, batch, rng, teacher_variables)
        return step

    with monkeypatch.context() as patched:
        wrap_train_steps(patched, stop_after_12)
        with pytest.raises(_Interrupt):
            trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
    ckpt = checkpointing.Checkpointer(str(tmp_path / "resumed"))
    assert ckpt.latest_step() == 9
    ckpt.close()

    final_resumed, _ = trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
    straight, resumed = restore_state(tmp_path / "straight"), restore_state(tmp_path / "resumed")
    assert int(resumed.step) == int(straight.step) == 18
    assert_trees_close(resumed.params, straight.params, rtol=1e-6, atol=1e-7)
    assert_trees_close(resumed.batch_stats, straight.batch_stats, rtol=1e-6, atol=1e-7)
    assert_trees_close(resumed.opt_state, straight.opt_state, rtol=1e-6, atol=1e-7)
    for key in ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece"):
        np.testing.assert_allclose(final_resumed[key], final_straight[key], rtol=1e-5)


def test_resuming_with_another_model_fails_clearly_and_keeps_the_run(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(epochs=1)
    trainer.train_and_evaluate(config, workdir)
    before = {name: os.path.getmtime(os.path.join(workdir, name))
              for name in ("config.json", "final_metrics.json")}
    checkpoints_before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))

    other = tiny_config(epochs=1)
    other.model.widths = (8, 16, 32)
    with pytest.raises(checkpointing.CheckpointMismatchError, match=r"widths|model"):
        trainer.train_and_evaluate(other, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == checkpoints_before
    assert {name: os.path.getmtime(os.path.join(workdir, name)) for name in before} == before


@pytest.mark.parametrize("field, value, expected", [
    ("batch_size", 30, "not divisible by the 4 devices"),
    ("num_epochs", 0, "num_epochs=0"),
    ("mixup_alpha", -1.0, "mixup_alpha=-1.0"),
])
def test_bad_config_values_are_named(field, value, expected, tmp_path):
    config = tiny_config()
    setattr(config, field, value)
    with pytest.raises(ValueError, match=expected):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_short_digits_run_learns_and_writes_final_metrics(tmp_path):
    config = load_config("digits_lt_balpoe", "epochs=12")
    config.model.blocks_per_stage = 2
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(config, workdir)

    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    for key in ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece", "mce",
                "seed", "val_top1_all", "top1_expert0", "top1_expert2"):
        assert key in final, key
    assert final["seed"] == config.seed
    # The test split is balanced, so top1_all is balanced accuracy; chance is 10%.
    assert final["top1_all"] > 70.0, final
    assert min(final["top1_many"], final["top1_medium"], final["top1_few"]) > 40.0, final
    assert 0.0 <= final["ece"] <= final["mce"] <= 100.0
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert any("loss" in line for line in lines)
    assert any("val/top1_all" in line for line in lines)
    assert json.load(open(os.path.join(workdir, "config.json")))["method"]["name"] == "balpoe"


@pytest.mark.slow
def test_cli_runs_a_config_with_overrides(tmp_path):
    workdir = str(tmp_path / "cli")
    config = os.path.join(CONFIG_DIR, "digits_lt_balpoe.py")
    result = subprocess.run(
        [sys.executable, "-m", "ltx.train", f"--config={config}:epochs=1", f"--workdir={workdir}",
         "--config.seed=7", "--config.model.blocks_per_stage=1",
         "--config.model.widths=(4, 8, 16)"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "top1_all" in result.stdout  # The final table.
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        assert json.load(f)["seed"] == 7

    result = subprocess.run(
        [sys.executable, "-m", "ltx.train", f"--config={config}:epochs=1", f"--workdir={workdir}",
         "--config.batch_size=0"], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "batch_size=0" in result.stderr


@pytest.mark.slow
def test_mixup_stops_at_mixup_epochs():
    """ACE's last epochs are mixup-free: past `mixup_epochs` the step equals the unmixed one."""
    config = tiny_config()
    dataset = digits.digits_lt(10.0)
    method = methods.build(config.method, dataset.class_counts)
    model = models.build(config.model, num_classes=10, num_experts=method.num_experts)
    lr = optim.learning_rate_schedule(config.schedule, base_lr=0.1, num_epochs=4,
                                      steps_per_epoch=1)
    tx = optim.make_optimizer(config.optimizer, lr)
    mesh = steps.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 16).astype(np.int32)}
    losses = {}
    for name, kwargs in {"until2": dict(mixup_alpha=0.4, mixup_epochs=2),
                         "always": dict(mixup_alpha=0.4), "never": {}}.items():
        step = steps.make_train_step(model, method, tx, lr, mesh, steps_per_epoch=1, **kwargs)
        for at in (1, 2):
            state = steps.create_train_state(jax.random.key(0, impl="rbg"), model, tx,
                                               (8, 8, 1), mesh)
            state = state.replace(step=jax.numpy.asarray(at, jax.numpy.int32))
            _, metrics = step(state, batch, jax.random.key(1), None)
            losses[name, at] = float(metrics["loss_sum"])
    assert losses["until2", 1] == pytest.approx(losses["always", 1], rel=1e-6)
    assert losses["until2", 2] == pytest.approx(losses["never", 2], rel=1e-6)
    assert abs(losses["always", 2] - losses["never", 2]) > 1e-3


def test_cifar100_lt_epochs_and_learning_rate_fall_on_the_official_steps(tmp_path):
    """LDAM-DRW on CIFAR-100-LT IR 100: 10,847 images, batch 128, 200 epochs. The official
    DataLoader (drop_last=False) gives 85 steps per epoch, 17,000 in all, and
    `adjust_learning_rate` sets, at 1-indexed epoch t, 0.1 t / 5 for t <= 5, 0.1 x 1e-4 for
    t > 180, 0.1 x 1e-2 for t > 160, else 0.1; DRW starts at 0-indexed epoch 160."""
    config = load_config("cifar100_lt_ldam_drw", "ir=100")
    counts = np.array([int(500 * 0.01 ** (i / 99)) for i in range(100)])
    assert counts.sum() == 10_847
    split = splits.Split(None, np.arange(10_847), np.repeat(np.arange(100), counts))
    dataset = types.SimpleNamespace(train=split, class_counts=counts)
    method, model = parts_lib.build_method_and_model(config, counts)
    run = parts_lib.make_plan(config, parts_lib.Parts(dataset, method, model))
    assert run.steps_per_epoch == 85 and run.total_steps == 17_000

    def official_lr(step):
        t = step // 85 + 1
        if t <= 5:
            return 0.1 * t / 5
        return 0.1 * (1e-4 if t > 180 else 1e-2 if t > 160 else 1.0)

    for step in (0, 84, 85, 424, 425, 13_599, 13_600, 15_299, 15_300, 16_999):
        np.testing.assert_allclose(float(run.learning_rate(step)), official_lr(step), rtol=1e-6,
                                   err_msg=f"step {step}")
    assert int(steps.epoch_of(13_599, run.steps_per_epoch)) == 159
    assert int(steps.epoch_of(13_600, run.steps_per_epoch)) == 160
    # The DRW switch: the loss changes between the two steps' epochs only.
    rng = np.random.default_rng(0)
    outputs = methods.Outputs(rng.normal(size=(1, 32, 100)).astype(np.float32) * 10)
    labels = rng.integers(0, 100, 32)
    before, after = (float(method.loss(outputs, labels, steps.epoch_of(s, 85)))
                     for s in (13_599, 13_600))
    assert before == float(method.loss(outputs, labels, 0)) and abs(after - before) > 1e-3


@pytest.mark.slow
def test_a_padded_masked_batch_trains_as_the_smaller_batch_alone():
    """One train step on 11 real rows padded to 16 (`mask`) equals the step on the 11 rows:
    loss, gradients (through the updated parameters and optimizer state) and BatchNorm
    statistics. LDAM-DRW: no Mixup, so both steps draw nothing."""
    config = tiny(name="digits_lt_ldam_drw")
    dataset = digits.digits_lt(imbalance_ratio=10)
    method = methods.build(config.method, dataset.class_counts)
    model = models.build(config.model, num_classes=10, num_experts=1)
    lr = optim.learning_rate_schedule(config.schedule, base_lr=0.1, num_epochs=2,
                                      steps_per_epoch=4)
    tx = optim.make_optimizer(config.optimizer, lr)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    images[11:] = 50.0  # Padding that would move every statistic if it counted.
    labels = rng.integers(0, 10, 16).astype(np.int32)
    mesh = steps.make_mesh(jax.devices()[:1])
    step = steps.make_train_step(model, method, tx, lr, mesh)
    results = []
    for batch in ({"image": images, "label": labels, "mask": np.arange(16) < 11},
                  {"image": images[:11], "label": labels[:11]}):
        state = steps.create_train_state(jax.random.key(0, impl="rbg"), model, tx, (8, 8, 1),
                                           mesh)
        state, metrics = step(state, batch, jax.random.key(1), None)
        results.append((jax.device_get(state), jax.device_get(metrics)))
    (padded, m_padded), (alone, m_alone) = results
    assert int(m_padded["count"]) == int(m_alone["count"]) == 11
    np.testing.assert_allclose(m_padded["loss_sum"], m_alone["loss_sum"], rtol=1e-6)
    assert int(m_padded["correct"]) == int(m_alone["correct"])
    # Float32 sums in another order (16 rows against 11, in XLA's and in small_conv's matrix
    # products): up to ~3e-6 on some CPUs; the same batch with its padding counted moves the
    # parameters by ~1 and the BatchNorm statistics by ~400.
    assert_trees_close(padded.params, alone.params, rtol=1e-5, atol=1e-5)
    assert_trees_close(padded.batch_stats, alone.batch_stats, rtol=1e-5, atol=1e-5)
    assert_trees_close(padded.opt_state, alone.opt_state, rtol=1e-5, atol=1e-5)
    # The padding would count without the mask: the comparison above can fail.
    state = steps.create_train_state(jax.random.key(0, impl="rbg"), model, tx, (8, 8, 1), mesh)
    unmasked, _ = step(state, {"image": images, "label": labels}, jax.random.key(1), None)
    unmasked = jax.device_get(unmasked)
    stem_var = lambda s: np.asarray(s.batch_stats["stem"]["bn"]["var"])  # noqa: E731
    assert np.abs(stem_var(unmasked) - stem_var(alone)).max() > 1e-2


@pytest.mark.parametrize("installed, backend, warns", [
    (["jax-cuda12-plugin", "numpy"], "cpu", True),
    (["libtpu"], "cpu", True),
    (["jax-cuda12-plugin"], "gpu", False),
    (["numpy", "jax"], "cpu", False),
])
def test_an_installed_accelerator_that_jax_does_not_use_is_warned_about(installed, backend,
                                                                         warns):
    warning = trainer.accelerator_warning(installed, backend)
    assert (warning is not None) == warns
    if warns:
        assert installed[0] in warning and "runs on CPU" in warning


def test_compile_cache_directory_follows_config_then_environment(monkeypatch, tmp_path):
    from ltx import compile_cache
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.directory("") == str(tmp_path / "env")
    assert compile_cache.directory(str(tmp_path / "cfg")) == str(tmp_path / "cfg")
    assert compile_cache.directory("off") is None
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.directory("") is None
    monkeypatch.delenv(compile_cache.ENV)
    assert compile_cache.directory("") == os.path.expanduser(compile_cache.DEFAULT)


@pytest.mark.slow
def test_a_second_identical_run_compiles_nothing_new(tmp_path):
    """The second launch of the same command finds every program in the persistent cache."""
    cache = tmp_path / "cache"
    # Every program is written (none is too quick to keep), so the set of entries is the set of
    # programs and a second run that compiled anything would add one.
    env = {**os.environ, "LTX_COMPILE_CACHE": str(cache), "LTX_COMPILE_CACHE_MIN_SECONDS": "0"}
    config = os.path.join(CONFIG_DIR, "digits_lt_ce.py") + ":tiny=1,epochs=1"
    for run in ("first", "second"):
        result = subprocess.run(
            [sys.executable, "-m", "ltx.train", f"--config={config}",
             f"--workdir={tmp_path / run}"], capture_output=True, text=True, timeout=600,
            env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        entries = sorted(os.listdir(cache))
        if run == "first":
            first = entries
            assert first, "nothing was cached"
    assert entries == first


def test_the_loop_runs_the_programs_compiled_ahead(tmp_path):
    """The train and eval steps are traced once each, by `steps.compile_ahead`'s threads while
    the state initialises; the loop's first step, the periodic evaluation (the loop waits for
    the eval step only there) and the final one reuse those programs."""
    traced = []
    config = tiny_config(epochs=2)
    config.eval.every_epochs = 1

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traced.append((kwargs.get("fun_name"), threading.current_thread().name))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    metrics = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert any(any(key.startswith("val/") for key in row) for row in metrics)
    steps_traced = [thread for name, thread in traced if name == "step_fn"]
    assert len(steps_traced) == 2, traced  # The train step and the eval step.
    assert all(thread.startswith("ltx-compile") for thread in steps_traced), traced


def test_keep_freed_buffers_is_off_when_the_environment_says_so(monkeypatch):
    from ltx import host_memory
    monkeypatch.setenv(host_memory.ENV, "0")
    assert host_memory.keep_freed_buffers() is False
    monkeypatch.delenv(host_memory.ENV)
    import platform
    if platform.libc_ver()[0] == "glibc":
        assert host_memory.keep_freed_buffers() is True
