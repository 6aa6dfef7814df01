"""The command-line error convention (ltx.cli): bad input ends in one `ltx-<tool>: error:` line
and exit status 2, before JAX starts where the config alone shows it, writing nothing; `--help`
answers without importing JAX; a finished workdir is reported, not trained or written again."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from helpers import CONFIG_DIR

BALPOE = os.path.join(CONFIG_DIR, "digits_lt_balpoe.py")
TINY = f"{BALPOE}:tiny=1,epochs=1"


def _run(args, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else {**os.environ, **env})


def _assert_one_line_error(result, tool, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{tool}: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    message = result.stderr[result.stderr.index(f"{tool}: error:"):]
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("tool, module", [
    ("eval", "ltx.cli"), ("predict", "ltx.cli"), ("stats", "ltx.cli"), ("import", "ltx.cli"),
    ("train", "ltx.train"),
])
def test_help_answers_without_importing_jax(tool, module):
    entry = {"eval": "evaluate", "predict": "predict", "stats": "stats",
             "import": "import_checkpoint", "train": "run"}[tool]
    code = (f"import sys\nfrom {module} import {entry}\n"
            f"try:\n    {entry}(['ltx-{tool}', '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code in (0, 1, None), e.code\n"  # absl exits 1 after --help.
            "heavy = sorted(m for m in ('jax', 'flax', 'orbax', 'grain', 'optax') "
            "if m in sys.modules)\nassert not heavy, heavy\nprint('HELP-OK')\n")
    result = _run(["-c", code])
    assert result.returncode == 0 and "HELP-OK" in result.stdout, result.stderr[-3000:]
    assert "--workdir" in result.stdout + result.stderr


@pytest.mark.parametrize("override, needles", [
    ("--config.batch_size=0", ("config.batch_size=0; expected >= 1",)),
    ("--config.method.name=balpoe2", ("config.method.name='balpoe2'", "expected one of")),
    ("--config.eval.shot_convention=lt", ("config.eval.shot_convention='lt'",)),
    ("--config.log_every_steps=0", ("config.log_every_steps=0",)),
    ("--config.data.imbalance_ratio=0", ("config.data.imbalance_ratio=0",)),
    ("--config.tensorboard=yes", ("tensorboard",)),  # Refused by the flag parser (a bool).
    ("--config.no_such_key=1", ("no_such_key", "does not have")),
    ("--config.optimizer.lrr=0.1", ("lrr",)),
])
def test_a_bad_training_value_fails_at_once_and_writes_nothing(override, needles, tmp_path):
    workdir = tmp_path / "run"
    result = _run(["-m", "ltx.train", f"--config={TINY}", f"--workdir={workdir}", override])
    _assert_one_line_error(result, "ltx-train", *needles)
    assert not workdir.exists()


def test_a_missing_config_file_and_a_bad_config_argument_are_named(tmp_path):
    result = _run(["-m", "ltx.train", "--config=configs/no_such.py", f"--workdir={tmp_path}/w"])
    _assert_one_line_error(result, "ltx-train", "no_such.py")
    result = _run(["-m", "ltx.train", f"--config={BALPOE}:epochz=3", f"--workdir={tmp_path}/w"])
    _assert_one_line_error(result, "ltx-train", "epochz")
    assert not (tmp_path / "w").exists()


def test_distributed_without_a_cluster_says_what_to_set(tmp_path):
    env = {k: "" for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
    result = _run(["-m", "ltx.train", f"--config={TINY}", f"--workdir={tmp_path}/w",
                   "--config.distributed=True"], env=env)
    _assert_one_line_error(result, "ltx-train", "jax.distributed.initialize() failed",
                           "JAX_COORDINATOR_ADDRESS")
    assert not (tmp_path / "w").exists()


def test_the_traceback_is_kept_on_request(tmp_path):
    result = _run(["-m", "ltx.train", f"--config={TINY}", f"--workdir={tmp_path}/w",
                   "--config.batch_size=0"], env={"LTX_TRACEBACK": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "ConfigError" in result.stderr


def _digests(folder):
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def test_rerunning_a_finished_workdir_reports_it_and_changes_no_byte(tiny_workdir):
    before = _digests(tiny_workdir)
    with open(os.path.join(tiny_workdir, "config.json")) as f:
        seed = json.load(f)["seed"]
    result = _run(["-m", "ltx.train", f"--config={TINY}", f"--workdir={tiny_workdir}",
                   f"--config.seed={seed + 4}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has finished already" in result.stdout and "top1_all" in result.stdout
    # The override did not take effect, and the output says so.
    assert f"seed: checkpoint {seed}, config {seed + 4}" in result.stdout
    assert _digests(tiny_workdir) == before


@pytest.mark.parametrize("args, needles", [
    (["--top_k=0", "{images}"], ("--top_k=0; expected >= 1",)),
    (["{missing}"], ("do not exist",)),
    ([], ("no image given",)),
])
def test_predict_rejects_bad_arguments_before_loading_the_model(args, needles, tiny_workdir,
                                                                 tmp_path):
    args = [a.format(images=CONFIG_DIR, missing=str(tmp_path / "nothing.png")) for a in args]
    result = _run(["-m", "ltx.cli", "predict", f"--workdir={tiny_workdir}", *args])
    _assert_one_line_error(result, "ltx-predict", *needles)


@pytest.mark.parametrize("tool", ["eval", "predict", "stats"])
def test_a_workdir_that_is_not_one_is_named(tool, tmp_path):
    args = ["-m", "ltx.cli", tool, f"--workdir={tmp_path / 'nope'}"]
    if tool == "predict":
        args.append(CONFIG_DIR)
    _assert_one_line_error(_run(args), f"ltx-{tool}", "does not exist")
    (tmp_path / "empty").mkdir()
    args[3] = f"--workdir={tmp_path / 'empty'}"
    _assert_one_line_error(_run(args), f"ltx-{tool}", "has no config.json")


def test_the_module_dispatcher_names_its_tools():
    result = _run(["-m", "ltx.cli", "evaluate"])
    _assert_one_line_error(result, "ltx.cli", "'eval'", "'predict'")
