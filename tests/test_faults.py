"""Faults during training (ltx.faults, ltx.checkpointing, the trainer): a damaged newest
checkpoint falls back to the previous intact one, a diverged run saves nothing from the diverged
state, a second trainer on a workdir is refused, a resume with another recipe is refused unless
allowed, records are never written twice, train_seconds adds up over resumes, and SIGTERM saves
a checkpoint and exits with status 4 so that the same command resumes."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import CONFIG_DIR, initial_state, nan_loss_from_step, tiny_config
from ltx import checkpointing, faults, files, trainer


def _state(value: float):
    return {"w": jnp.full((3, 4), value, jnp.float32), "b": jnp.arange(4.0) + value}


def _save_two(workdir):
    ckpt = checkpointing.Checkpointer(workdir, async_save=False)
    for step in (1, 2):
        ckpt.save(step, _state(float(step)), {"position": step}, {"fingerprint": "f"},
                  force=True)
    ckpt.close()


def _truncate(path, size=7):
    with open(path, "r+b") as f:
        f.truncate(size)


DAMAGES = {
    "array data truncated": lambda d: [_truncate(p) for p in glob.glob(f"{d}/state/**/d/*",
                                                                        recursive=True)],
    "array metadata truncated": lambda d: _truncate(f"{d}/state/_METADATA"),
    "run metadata deleted": lambda d: os.remove(f"{d}/meta/metadata"),
    "run metadata truncated": lambda d: _truncate(f"{d}/meta/metadata", 3),
    "state folder deleted": lambda d: shutil.rmtree(f"{d}/state"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, tmp_path, capsys):
    workdir = str(tmp_path)
    _save_two(workdir)
    DAMAGES[damage](os.path.join(workdir, "checkpoints", "2"))

    ckpt = checkpointing.Checkpointer(workdir, async_save=False)
    with pytest.raises(checkpointing.CheckpointDamagedError,
                       match=r"checkpoint step 2 in .* is damaged"):
        ckpt.restore(_state(0.0), {"fingerprint": "f"})
    state, data, meta = ckpt.restore_intact(_state(0.0), {"fingerprint": "f"})
    np.testing.assert_array_equal(state["w"], np.full((3, 4), 1.0))
    assert data == {"position": 1} and meta["fingerprint"] == "f"
    assert "resumed from step 1" in capsys.readouterr().out
    # The damaged step is kept aside (not deleted) and no longer blocks saving step 2 again.
    assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "2"))
    assert ckpt.all_steps() == [1]
    ckpt.save(2, _state(5.0), {"position": 2}, {"fingerprint": "f"}, force=True)
    ckpt.wait_until_finished()
    assert ckpt.restore(_state(0.0))[0]["b"][0] == 5.0
    ckpt.close()


def test_no_intact_checkpoint_is_one_clear_error(tmp_path):
    workdir = str(tmp_path)
    _save_two(workdir)
    for step in (1, 2):
        os.remove(os.path.join(workdir, "checkpoints", str(step), "meta", "metadata"))
    ckpt = checkpointing.Checkpointer(workdir, async_save=False)
    with pytest.raises(checkpointing.CheckpointDamagedError, match="no intact checkpoint"):
        ckpt.restore_intact(_state(0.0), {"fingerprint": "f"})
    ckpt.close()


def test_a_mismatch_is_not_mistaken_for_damage(tmp_path):
    _save_two(str(tmp_path))
    ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
    with pytest.raises(checkpointing.CheckpointMismatchError, match="fingerprint"):
        ckpt.restore_intact(_state(0.0), {"fingerprint": "another model"})
    assert ckpt.all_steps() == [1, 2]  # Nothing quarantined.
    ckpt.close()


def test_a_second_lock_on_a_workdir_is_refused_and_released_with_the_first(tmp_path):
    with faults.WorkdirLock(str(tmp_path)):
        with pytest.raises(faults.WorkdirBusy, match=f"process {os.getpid()}"):
            with faults.WorkdirLock(str(tmp_path)):
                pass
    with faults.WorkdirLock(str(tmp_path)):  # Free again.
        pass


def test_atomic_writes_keep_the_old_file_when_the_write_fails(tmp_path):
    path = str(tmp_path / "final_metrics.json")
    files.write_json(path, {"top1_all": 50.0})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        files.write_json(path, {"top1_all": Unserialisable()})
    assert json.load(open(path)) == {"top1_all": 50.0}
    assert os.listdir(tmp_path) == ["final_metrics.json"]  # No temporary file left.


def _records(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _steps_logged(workdir):
    return [r["step"] for r in _records(workdir) if "loss" in r]


@pytest.mark.slow
def test_divergence_stops_saves_nothing_and_the_run_resumes(tmp_path, monkeypatch):
    """Non-finite metrics at step 12 (the epoch-1 checkpoint is at step 9 of 18): Diverged,
    step 9 stays the newest checkpoint, then a resume of the same workdir finishes with every
    step logged once and train_seconds counting both attempts."""
    config = tiny_config(epochs=2)
    config.log_every_steps = 2
    workdir = str(tmp_path / "run")
    with monkeypatch.context() as patched:
        nan_loss_from_step(patched, 12)
        with pytest.raises(faults.Diverged,
                           match=r"at step 12 \(last finite loss .* at step 11\)"):
            trainer.train_and_evaluate(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))
    ckpt = checkpointing.Checkpointer(workdir)
    assert ckpt.all_steps() == [9]
    seconds_at_9 = ckpt.restore(initial_state(config))[2]["train_seconds"]
    ckpt.close()
    assert _steps_logged(workdir) == [2, 4, 6, 8, 10]  # Step 12 was not logged.

    final, resumed = trainer.train_and_evaluate(config, workdir)
    assert resumed.step == 18
    assert _steps_logged(workdir) == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert final["train_seconds"] > seconds_at_9 > 0


def test_a_resume_with_another_recipe_is_refused_unless_allowed(tiny_workdir, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(tiny_workdir, workdir)
    first = json.load(open(os.path.join(workdir, "final_metrics.json")))
    config = tiny_config()
    config.seed += 1
    config.optimizer.lr *= 2
    with pytest.raises(checkpointing.CheckpointMismatchError) as err:
        trainer.train_and_evaluate(config, workdir)
    message = str(err.value)
    assert "recipe" in message and "optimizer.lr" in message and "seed" in message
    assert "allow_config_change=True" in message
    assert not glob.glob(os.path.join(workdir, "config.*.json"))

    steps = first["steps"]
    with open(os.path.join(workdir, "checkpoints", str(steps), "meta", "metadata")) as f:
        seconds_saved = json.load(f)["train_seconds"]  # The first attempt's, at its last save.
    config.checkpoint.allow_config_change = True
    final, _ = trainer.train_and_evaluate(config, workdir)
    saved = json.load(open(os.path.join(workdir, f"config.{steps}.json")))
    assert saved["seed"] == config.seed  # The new config is kept beside the first,
    assert json.load(open(os.path.join(workdir, "config.json")))["seed"] == config.seed - 1
    launches = [json.loads(line) for line in open(os.path.join(workdir, "launches.jsonl"))]
    assert [entry["step"] for entry in launches] == [0, steps]
    # and the time adds the resume's (nothing was trained) to the first attempt's.
    assert final["train_seconds"] >= seconds_saved > 0
    finals = [r for r in _records(workdir) if "final/top1_all" in r]
    assert len(finals) == 1 and len([r for r in _records(workdir) if "loss" in r]) == 1


def test_a_second_trainer_on_a_workdir_is_refused(tmp_path):
    workdir = str(tmp_path / "run")
    with faults.WorkdirLock(workdir):
        with pytest.raises(faults.WorkdirBusy, match="is being trained by process"):
            trainer.train_and_evaluate(tiny_config(), workdir)
    assert sorted(os.listdir(workdir)) == [".lock"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_4_and_the_same_command_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    command = [sys.executable, "-m", "ltx.train",
               f"--config={os.path.join(CONFIG_DIR, 'digits_lt_balpoe.py')}:tiny=1,epochs=3",
               f"--workdir={workdir}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stdout:  # The run description comes before the step is compiled.
        if "train images" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 4, stderr[-3000:]
    assert "SIGTERM at step" in stderr and "rerun the same command to resume" in stderr
    stopped = int(stderr.split("SIGTERM at step ")[1].split()[0])
    assert 1 <= stopped < 27
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(stopped)))

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from step {stopped}" in result.stdout
    assert json.load(open(os.path.join(workdir, "final_metrics.json")))["steps"] == 27
    logged = _steps_logged(workdir)
    assert logged == sorted(set(logged)) and logged[-1] == 27
