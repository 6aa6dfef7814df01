"""Packed runs (ltx.packed): the seeds of one recipe trained as one program write what each
seed trained alone writes, bit for bit in the 'loop' form; faults stay per run; `ltx-sweep
--pack` makes the same table."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from helpers import restore_state, tiny_config, wrap_train_steps
from ltx import faults, packed, parts as parts_lib, stages, steps, sweep, trainer


def _final(workdir):
    """final_metrics.json without the wall-clock times."""
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    final.pop("train_seconds")
    for stage in final.get("stages", {}).values():
        stage.pop("train_seconds", None)
    return final


def _packed_config(name, seeds=(1, 2), epochs=2, form="auto"):
    config = tiny_config(name, epochs=epochs)
    config.pack.seeds = seeds
    config.pack.form = form
    return config


def _alone(name, seed, workdir, epochs=2):
    config = tiny_config(name, epochs=epochs)
    config.seed = seed
    return stages.train(config, str(workdir))


def _assert_same_run(packed_dir, alone_dir):
    assert _final(packed_dir) == _final(alone_dir)
    a, b = restore_state(packed_dir), restore_state(alone_dir)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(os.path.join(packed_dir, "config.json")) as f, \
            open(os.path.join(alone_dir, "config.json")) as g:
        # Field for field in the same order, but a later stage's own earlier stage to start from.
        packed_config = f.read().replace(str(packed_dir.parent), "<run>")
        alone_config = g.read().replace(str(alone_dir.parent), "<run>")
        assert packed_config == alone_config


@pytest.mark.slow
def test_packed_balpoe_equals_each_seed_trained_alone(tmp_path):
    results = stages.train_packed(_packed_config("digits_lt_balpoe"), str(tmp_path / "packed"))
    assert sorted(results) == [str(tmp_path / "packed" / "seed1"),
                               str(tmp_path / "packed" / "seed2")]
    for seed in (1, 2):
        _alone("digits_lt_balpoe", seed, tmp_path / "alone" / f"seed{seed}")
        _assert_same_run(tmp_path / "packed" / f"seed{seed}", tmp_path / "alone" / f"seed{seed}")
    # Different seeds: different runs (the pack did not train one run twice).
    assert _final(tmp_path / "packed" / "seed1") != _final(tmp_path / "packed" / "seed2")


@pytest.mark.slow
def test_packed_ride_stages_equal_each_seed_trained_alone(tmp_path):
    stages.train_packed(_packed_config("digits_lt_ride", epochs=1), str(tmp_path / "packed"))
    for seed in (1, 2):
        _alone("digits_lt_ride", seed, tmp_path / "alone" / f"seed{seed}", epochs=1)
        for stage in ("experts", "router"):
            _assert_same_run(tmp_path / "packed" / f"seed{seed}" / stage,
                             tmp_path / "alone" / f"seed{seed}" / stage)
        assert _final(tmp_path / "packed" / f"seed{seed}") == \
            _final(tmp_path / "alone" / f"seed{seed}")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["scan", "vmap"])
def test_one_program_forms_agree_with_the_runs_alone_to_float_rounding(form):
    config = tiny_config("digits_lt_balpoe")
    parts = parts_lib.build(config)
    plan, mesh = parts_lib.make_plan(config, parts), steps.make_mesh()
    configs = [tiny_config("digits_lt_balpoe", arg="") for _ in range(2)]
    configs[1].seed = 2
    states = [trainer.initial_state(c, parts, plan, mesh) for c in configs]
    host = [next(iter(trainer.train_data(c, parts.dataset, plan.epochs))) for c in configs]
    feed, augment = trainer.make_feed(config, parts.dataset, mesh)
    options = dict(steps_per_epoch=plan.steps_per_epoch, mixup_alpha=config.mixup_alpha,
                   batch_augment=augment)
    alone = steps.make_train_step(parts.model, parts.method, plan.tx, plan.learning_rate, mesh,
                                  **options)
    pack = steps.make_packed_train_step(parts.model, parts.method, plan.tx,
                                        plan.learning_rate, mesh, form=form, **options)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
    batches = {k: jax.make_array_from_process_local_data(
        sharding, np.stack([np.asarray(b[k]) for b in host])) for k in host[0]}
    source = trainer.device_images(parts.dataset, mesh) if augment is not None else None
    expected = [alone(s, feed(b), parts_lib.step_key(c), None)
                for s, b, c in zip(states, host, configs)]
    states = [trainer.initial_state(c, parts, plan, mesh) for c in configs]  # Donated above.
    got, metrics = pack(packed.stack(states), batches,
                        packed.stack([parts_lib.step_key(c) for c in configs]), None, source)
    for k, (state, run_metrics) in enumerate(expected):
        np.testing.assert_allclose(float(metrics["loss_sum"][k]), float(run_metrics["loss_sum"]),
                                   rtol=1e-6)
        for x, y in zip(jax.tree.leaves(packed.unstack(got, k).params),
                        jax.tree.leaves(state.params)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-5)
    differs = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(
        jax.tree.leaves(packed.unstack(got, 0).params), jax.tree.leaves(expected[1][0].params)))
    assert differs > 1e-3  # Run 0 is not run 1: the comparison above can fail.


@pytest.mark.slow
def test_a_diverged_run_stops_alone_and_keeps_its_last_checkpoint(tmp_path, monkeypatch):
    calls = []

    def wrap(step_fn):
        def second_run_nan_from_step_4(state, batch, rng, teacher_variables):
            state, metrics = step_fn(state, batch, rng, teacher_variables)
            calls.append(1)
            if len(calls) % 2 == 0 and len(calls) >= 8:  # Run 2 of 2, its step 4 on.
                metrics = dict(metrics, loss_sum=np.float32(np.nan))
            return state, metrics
        return second_run_nan_from_step_4

    wrap_train_steps(monkeypatch, wrap)
    config = _packed_config("digits_lt_balpoe")
    config.log_every_steps = 1
    config.checkpoint.every_epochs = 1
    results = stages.train_packed(config, str(tmp_path))
    first, second = results[str(tmp_path / "seed1")], results[str(tmp_path / "seed2")]
    assert isinstance(second, faults.Diverged) and "at step 4" in str(second)
    assert first["top1_all"] > 0 and os.path.isfile(tmp_path / "seed1" / "final_metrics.json")
    assert not os.path.exists(tmp_path / "seed2" / "final_metrics.json")
    monkeypatch.undo()
    _alone("digits_lt_balpoe", 1, tmp_path / "alone1")
    assert _final(tmp_path / "seed1") == _final(tmp_path / "alone1")


@pytest.mark.slow
def test_a_preempted_pack_resumes_every_run_to_the_same_numbers(tmp_path, monkeypatch):
    calls = []

    def wrap(step_fn):
        def sigterm_at_call_7(*args):
            calls.append(1)
            if len(calls) == 7:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(*args)
        return sigterm_at_call_7

    wrap_train_steps(monkeypatch, wrap)
    with pytest.raises(faults.Preempted, match="checkpoints saved"):
        stages.train_packed(_packed_config("digits_lt_balpoe"), str(tmp_path / "run"))
    monkeypatch.undo()
    steps_saved = [sorted(os.listdir(tmp_path / "run" / f"seed{s}" / "checkpoints"))
                   for s in (1, 2)]
    assert steps_saved[0] == steps_saved[1] == ["4"]  # Both runs at the pack's step.
    stages.train_packed(_packed_config("digits_lt_balpoe"), str(tmp_path / "run"))
    stages.train_packed(_packed_config("digits_lt_balpoe"), str(tmp_path / "straight"))
    for seed in (1, 2):
        assert _final(tmp_path / "run" / f"seed{seed}") == \
            _final(tmp_path / "straight" / f"seed{seed}")


def test_bad_pack_settings_are_refused():
    config = _packed_config("digits_lt_balpoe", seeds=(1, 1))
    with pytest.raises(ValueError, match=r"pack.seeds=\(1, 1\)"):
        packed.run_configs(config, "/tmp/x")
    with pytest.raises(ValueError, match="config.pack.form='grid'"):
        packed.resolve_form("grid")
    a, b = tiny_config("digits_lt_balpoe"), tiny_config("digits_lt_balpoe")
    b.optimizer.lr = 0.5
    with pytest.raises(ValueError, match="differ only in seed.*optimizer.lr"):
        packed.train_and_evaluate([a, b], ["/tmp/a", "/tmp/b"])


def test_the_sweep_packs_the_unfinished_seeds_of_each_cell(tmp_path):
    runs = sweep.grid(["configs/digits_lt_ce.py:tiny=1"], [1, 2, 3])
    os.makedirs(tmp_path / "digits_lt_ce__tiny=1" / "seed2")
    (tmp_path / "digits_lt_ce__tiny=1" / "seed2" / "final_metrics.json").write_text("{}")
    todo = [r for r in runs if r.seed != 2]
    job, = sweep._jobs(todo, str(tmp_path), pack=True)
    script = job.script(str(tmp_path), evaluate=True)
    assert "--config.pack.seeds=(1,3,)" in script and "--config.seed" not in script
    assert f"--workdir={tmp_path / 'digits_lt_ce__tiny=1'}" in script
    assert script.count("ltx.cli eval") == 2 and job.log.endswith("packed.log")


@pytest.mark.slow
def test_a_packed_sweep_makes_the_unpacked_table(tmp_path):
    runs = sweep.grid(["configs/digits_lt_ce.py:tiny=1,epochs=2"], [1, 2])
    tables = []
    for pack in (False, True):
        root = str(tmp_path / ("packed" if pack else "alone"))
        status = sweep.run_grid(runs, root, pack=pack, log=lambda *_: None)
        assert set(status.values()) == {"done"}
        rows = sweep.write_table(root, pictures=False)
        tables.append([{k: v for k, v in row.items() if "seconds" not in k} for row in rows])
    assert tables[0] == tables[1]
