"""Crashes that really crash: a training process SIGKILLed at several moments (between steps,
while an asynchronous checkpoint save is in flight, right after one, during the final
evaluation; and in the second stage of RIDE) and relaunched with the same command until it
finishes ends with parameters, BatchNorm statistics, optimizer state and final metrics
bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import CONFIG_DIR, restore_state
from ltx import checkpointing

pytestmark = pytest.mark.slow


def _command(config_arg, workdir, *overrides):
    return [sys.executable, "-m", "ltx.train", f"--config={config_arg}", f"--workdir={workdir}",
            *overrides]


def _committed(folder):
    """Steps whose checkpoint is complete (orbax renames a step's folder when it commits)."""
    path = os.path.join(folder, "checkpoints")
    if not os.path.isdir(path):
        return set()
    return {int(name) for name in os.listdir(path) if name.isdigit()}


def _saving(folder):
    path = os.path.join(folder, "checkpoints")
    return os.path.isdir(path) and any("tmp" in name for name in os.listdir(path))


def _logged(folder):
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if '"loss"' in line)


def _run_with_kills(command, conditions, log_path):
    """Launches `command`, SIGKILLs it as soon as the next condition holds, relaunches, until a
    launch finishes by itself. `conditions` are (name, factory); a launch calls the next factory
    to get its predicate. Returns the names of the kills that happened."""
    kills = []
    pending = list(conditions)
    while True:
        with open(log_path, "a") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        condition = pending.pop(0) if pending else None
        holds = condition[1]() if condition else None
        while process.poll() is None:
            if holds is not None and holds():
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills.append(condition[0])
                break
            time.sleep(0.002)
        if process.returncode == 0:
            return kills
        assert process.returncode == -signal.SIGKILL, open(log_path).read()[-3000:]
        assert len(kills) <= len(conditions), "relaunched more often than it was killed"


def _assert_same_run(workdir_a, workdir_b):
    state_a, state_b = restore_state(workdir_a), restore_state(workdir_b)
    for name in ("params", "batch_stats", "opt_state"):
        leaves_a = [np.asarray(x) for x in jax.tree.leaves(getattr(state_a, name))]
        leaves_b = [np.asarray(x) for x in jax.tree.leaves(getattr(state_b, name))]
        assert len(leaves_a) == len(leaves_b)
        for x, y in zip(leaves_a, leaves_b):
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert int(state_a.step) == int(state_b.step)


def _final(workdir):
    """final_metrics.json without the wall-clock times (of every stage)."""
    def without_times(value):
        if isinstance(value, dict):
            return {k: without_times(v) for k, v in value.items() if k != "train_seconds"}
        return value
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        return without_times(json.load(f))


def test_sigkill_at_four_moments_then_relaunching_gives_the_uninterrupted_run(tmp_path):
    config = f"{os.path.join(CONFIG_DIR, 'digits_lt_balpoe.py')}:tiny=1,epochs=4"
    overrides = ("--config.checkpoint.async_save=True", "--config.log_every_steps=1")
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    assert subprocess.run(_command(config, straight, *overrides), capture_output=True,
                          timeout=900).returncode == 0

    def after_new_steps():
        start = _logged(killed)
        return lambda: _logged(killed) >= start + 3

    def during_a_save():
        return lambda: _saving(killed)

    def after_a_save():
        start = _committed(killed)
        return lambda: len(_committed(killed) - start) > 0

    def during_final_evaluation():
        return lambda: 36 in _committed(killed) and not _saving(killed) and not os.path.exists(
            os.path.join(killed, "final_metrics.json"))

    # Each condition is made at its launch (what it waits for is relative to that moment).
    conditions = [("between steps", after_new_steps),
                  ("during an asynchronous save", during_a_save),
                  ("right after a save", after_a_save),
                  ("during the final evaluation", during_final_evaluation)]
    kills = _run_with_kills(_command(config, killed, *overrides), conditions,
                            str(tmp_path / "killed.log"))
    assert len(kills) >= 3, (kills, open(tmp_path / "killed.log").read()[-3000:])
    _assert_same_run(straight, killed)
    assert _final(straight) == _final(killed)
    steps = [json.loads(line)["step"] for line in open(os.path.join(killed, "metrics.jsonl"))
             if '"loss"' in line]
    assert steps == list(range(1, 37)), steps  # Every step logged once.


def test_sigkill_in_the_second_stage_of_ride_resumes_that_stage(tmp_path):
    config = f"{os.path.join(CONFIG_DIR, 'digits_lt_ride.py')}:tiny=1,epochs=2"
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    overrides = ("--config.log_every_steps=1",)
    assert subprocess.run(_command(config, straight, *overrides), capture_output=True,
                          timeout=900).returncode == 0
    router = os.path.join(killed, "router")

    def in_the_router_stage():
        return lambda: _logged(router) > 0 or _committed(router)

    kills = _run_with_kills(_command(config, killed, *overrides),
                            [("router stage", in_the_router_stage)],
                            str(tmp_path / "killed.log"))
    assert kills == ["router stage"]
    for stage in ("experts", "router"):
        _assert_same_run(os.path.join(straight, stage), os.path.join(killed, stage))
    assert _final(straight) == _final(killed)
    assert checkpointing.Checkpointer(os.path.join(killed, "router")).latest_step() is not None
