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


@pytest.mark.parametrize("tool, module, flag", [
    ("eval", "ltx.cli", "--workdir"), ("predict", "ltx.cli", "--top_k"),
    ("stats", "ltx.cli", "--[no]xla"), ("import", "ltx.cli", "--checkpoint"),
    ("prepare", "ltx.cli", "--tarball"), ("sweep", "ltx.cli", "--parallel"),
    ("train", "ltx.train", "--workdir"),
])
def test_help_answers_without_importing_jax(tool, module, flag):
    entry = {"eval": "evaluate", "predict": "predict", "stats": "stats",
             "import": "import_checkpoint", "prepare": "prepare", "sweep": "sweep",
             "train": "run"}[tool]
    code = (f"import sys\nfrom {module} import {entry}\n"
            f"try:\n    {entry}(['ltx-{tool}', '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code in (0, 1, None), e.code\n"  # absl exits 1 after --help.
            "heavy = sorted(m for m in ('jax', 'flax', 'orbax', 'grain', 'optax') "
            "if m in sys.modules)\nassert not heavy, heavy\nprint('HELP-OK')\n")
    result = _run(["-c", code])
    assert result.returncode == 0 and "HELP-OK" in result.stdout, result.stderr[-3000:]
    assert flag in result.stdout + result.stderr  # The tool's own flags are listed.


def _config(name, arg="tiny=1,epochs=1"):
    return f"{os.path.join(CONFIG_DIR, name + '.py')}:{arg}"


def _train(*overrides, config=TINY):
    return ["-m", "ltx.train", f"--config={config}", "--workdir={finished}", *overrides]


# Every bad input handled before any work: (command, what the one-line message must contain).
# `{finished}` is a finished workdir, which must stay byte-identical; `{tmp}` a fresh folder.
# `pytest --durations=0 tests/test_cli.py` gives the seconds each takes.
CATALOGUE = {
    # Config values: the static check, before JAX starts.
    "batch_size=0": (_train("--config.batch_size=0"), ["config.batch_size=0; expected >= 1"]),
    "batch_size=-64": (_train("--config.batch_size=-64"), ["config.batch_size=-64"]),
    "num_epochs=0": (_train("--config.num_epochs=0"), ["config.num_epochs=0; expected > 0"]),
    "num_epochs=5 (decay at 160)": (
        _train("--config.num_epochs=5", config=_config("digits_lt_ldam_drw", "")),
        ["outside (0, num_epochs=5]", ":epochs=N"]),
    "log_every_steps=0": (_train("--config.log_every_steps=0"), ["config.log_every_steps=0"]),
    "mixup_alpha=-1": (_train("--config.mixup_alpha=-1.0"), ["config.mixup_alpha=-1.0"]),
    "method.name": (_train("--config.method.name=balpoe2"),
                    ["config.method.name='balpoe2'", "expected one of", "'ride'"]),
    "data.name": (_train("--config.data.name=digits"), ["config.data.name='digits'"]),
    "data.imbalance_ratio=0": (_train("--config.data.imbalance_ratio=0"),
                               ["config.data.imbalance_ratio=0"]),
    "data.profile": (_train("--config.data.profile=linear"), ["config.data.profile='linear'"]),
    "data.sampler": (_train("--config.data.sampler=balanced"), ["'balanced'", "expected one"]),
    "data.last_batch": (_train("--config.data.last_batch=keep"), ["config.data.last_batch"]),
    "data.augment.kind": (_train("--config.data.augment.kind=autoaugment"),
                          ["config.data.augment.kind='autoaugment'"]),
    "data.data_dir missing": (_train("--config.data.data_dir=/no/such/dir"),
                              ["config.data.data_dir='/no/such/dir'"]),
    "model.name": (_train("--config.model.name=resnet18"), ["config.model.name='resnet18'"]),
    "model.widths length": (_train("--config.model.widths=(16, 32)"),
                            ["config.model.widths=(16, 32); expected 3"]),
    "model.head": (_train("--config.model.head=cosine_linear"), ["model.head='cosine_linear'"]),
    "model.expert_strategy": (_train("--config.model.expert_strategy=loop"),
                              ["config.model.expert_strategy='loop'"]),
    "model.bn_running_var": (_train("--config.model.bn_running_var=pytorch"),
                             ["config.model.bn_running_var='pytorch'"]),
    "model.init_checkpoint missing": (_train("--config.model.init_checkpoint=/no/such.ckpt"),
                                      ["config.model.init_checkpoint='/no/such.ckpt'"]),
    "optimizer.lr=0": (_train("--config.optimizer.lr=0"), ["config.optimizer.lr=0"]),
    "optimizer.lr=nan": (_train("--config.optimizer.lr=nan"), ["config.optimizer.lr=nan"]),
    "optimizer.momentum=1": (_train("--config.optimizer.momentum=1.0"),
                             ["config.optimizer.momentum=1.0"]),
    "schedule.name": (_train("--config.schedule.name=linear"), ["config.schedule.name"]),
    "eval.shot_convention": (_train("--config.eval.shot_convention=lt"),
                             ["config.eval.shot_convention='lt'"]),
    "eval.batch_size=0": (_train("--config.eval.batch_size=0"), ["config.eval.batch_size=0"]),
    "checkpoint.max_to_keep=0": (_train("--config.checkpoint.max_to_keep=0"),
                                 ["config.checkpoint.max_to_keep=0"]),
    "teacher.workdir missing": (_train("--config.teacher.workdir=/no/such/run"),
                                ["config.teacher.workdir='/no/such/run'"]),
    "teacher.workdir unfinished": (_train("--config.teacher.workdir={tmp}"),
                                   ["a finished run (it has no final_metrics.json)"]),
    "stage value": (_train("--config.stages.router.optimizer.lr=-1.0",
                           config=_config("digits_lt_ride")),
                    ["stage 'router': config.optimizer.lr=-1.0; expected > 0"]),
    "three at once": (_train("--config.batch_size=0", "--config.optimizer.lr=-1.0",
                             "--config.eval.num_bins=0"),
                      ["3 problem(s)", "batch_size=0", "optimizer.lr=-1.0", "num_bins=0"]),
    # Config values only the constructors know (the build tier, before any data is read).
    "batch_size=30 on 4 devices": (_train("--config.batch_size=30"),
                                   ["config.batch_size=30 is not divisible by the 4 devices"]),
    "RIDE distill_multiplicity": (_train("--config.method.distill_multiplicity=twice",
                                         config=_config("digits_lt_ride")),
                                  ["distill_multiplicity='twice'"]),
    "ACE thresholds reversed": (_train("--config.method.thresholds=(0.1, 0.4)",
                                       config=_config("digits_lt_ace")), ["threshold"]),
    # Flags and config files.
    "bool field given a word": (_train("--config.tensorboard=yes"), ["tensorboard"]),
    "unknown config field": (_train("--config.no_such_key=1"),
                             ["--config.no_such_key: config has no field 'no_such_key'"]),
    "misspelt nested field": (_train("--config.optimizer.lrr=0.1"),
                              ["config.optimizer has no field 'lrr'; did you mean 'lr'?"]),
    "config file missing": (["-m", "ltx.train", "--config=configs/no_such.py",
                             "--workdir={finished}"],
                            ["the config file 'configs/no_such.py' does not exist"]),
    "stats config missing": (["-m", "ltx.cli", "stats", "--config=configs/no_such.py:x=1"],
                             ["the config file 'configs/no_such.py' does not exist"]),
    "config argument unknown": (_train(config=f"{BALPOE}:epochz=3"), ["epochz"]),
    "stray argument": (_train("extra"), ["unexpected arguments ['extra']"]),
    "workdir flag missing": (["-m", "ltx.train", f"--config={TINY}"], ["--workdir"]),
    # ltx-predict: arguments checked before the model is restored.
    "predict top_k=0": (["-m", "ltx.cli", "predict", "--workdir={finished}", "--top_k=0",
                         CONFIG_DIR], ["--top_k=0; expected >= 1"]),
    "predict image missing": (["-m", "ltx.cli", "predict", "--workdir={finished}",
                               "{tmp}/nothing.png"], ["do not exist", "nothing.png"]),
    "predict no image": (["-m", "ltx.cli", "predict", "--workdir={finished}"],
                         ["no image given"]),
    "predict prior length": (["-m", "ltx.cli", "predict", "--workdir={finished}", "--prior=0.5,0.5",
                              CONFIG_DIR], ["has 2 values"]),
    "predict prior words": (["-m", "ltx.cli", "predict", "--workdir={finished}", "--prior=a,b",
                             CONFIG_DIR], ["--prior='a,b'; expected comma-separated numbers"]),
    "predict folder without images": (["-m", "ltx.cli", "predict", "--workdir={finished}",
                                       "{tmp}"], ["no image files"]),
    "predict workdir missing": (["-m", "ltx.cli", "predict", "--workdir={tmp}/nope", CONFIG_DIR],
                                ["does not exist"]),
    "predict not a workdir": (["-m", "ltx.cli", "predict", "--workdir={tmp}", CONFIG_DIR],
                              ["has no config.json"]),
    # ltx-eval, ltx-stats, ltx-import.
    "eval workdir missing": (["-m", "ltx.cli", "eval", "--workdir={tmp}/nope"],
                             ["does not exist"]),
    "eval not a workdir": (["-m", "ltx.cli", "eval", "--workdir={tmp}"], ["has no config.json"]),
    "eval shot convention": (["-m", "ltx.cli", "eval", "--workdir={finished}",
                              "--shot_convention=lt"], ["--shot_convention='lt'"]),
    "eval max_per_class=0": (["-m", "ltx.cli", "eval", "--workdir={finished}",
                              "--max_per_class=0"], ["--max_per_class=0; expected >= 1"]),
    "eval test-time epochs alone": (["-m", "ltx.cli", "eval", "--workdir={finished}",
                                     "--test_time_epochs=9"],
                                    ["--test_time_epochs without --test_time_aggregation"]),
    "eval test-time epochs=0": (["-m", "ltx.cli", "eval", "--workdir={finished}",
                                 "--test_time_aggregation", "--test_time_epochs=0"],
                                ["epochs=0 (expected an int >= 1)"]),
    "eval step missing": (["-m", "ltx.cli", "eval", "--workdir={finished}", "--step=999"],
                          ["no checkpoint of step 999", "steps [9]"]),
    "stats neither": (["-m", "ltx.cli", "stats"], ["exactly one of --config and --workdir"]),
    "stats bad config": (["-m", "ltx.cli", "stats", f"--config={TINY}",
                          "--config.model.name=resnet18"], ["config.model.name='resnet18'"]),
    "import checkpoint missing": (["-m", "ltx.cli", "import", f"--config={TINY}",
                                   "--checkpoint={tmp}/model.pth", "--workdir={tmp}/imported"],
                                  ["--checkpoint=", "is not a file"]),
    "import not a checkpoint": (["-m", "ltx.cli", "import", f"--config={TINY}",
                                 "--checkpoint={tmp}/notes.pth", "--workdir={tmp}/imported"],
                                ["notes.pth"]),
    "import into a workdir in use": (["-m", "ltx.cli", "import", f"--config={TINY}",
                                      "--checkpoint={tmp}/notes.pth", "--workdir={finished}"],
                                     ["{finished}"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_bad_input_is_one_message_and_exit_2_and_changes_nothing(case, tiny_workdir, tmp_path):
    command, needles = CATALOGUE[case]
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    before = _digests(tiny_workdir)
    fill = {"finished": tiny_workdir, "tmp": str(tmp_path)}
    result = _run([arg.format(**fill) for arg in command])
    tool = "ltx-train" if "ltx.train" in command else f"ltx-{command[2]}"
    _assert_one_line_error(result, tool, *(n.format(**fill) for n in needles))
    assert "Resumed" not in result.stdout and "step " not in result.stdout  # Before training.
    assert _digests(tiny_workdir) == before
    assert sorted(os.listdir(tmp_path)) == ["notes.pth"]


def test_a_bad_value_for_a_fresh_workdir_creates_nothing(tmp_path):
    workdir = tmp_path / "run"
    result = _run(["-m", "ltx.train", f"--config={TINY}", f"--workdir={workdir}",
                   "--config.method.name=balpoe2"])
    _assert_one_line_error(result, "ltx-train", "config.method.name='balpoe2'")
    assert not workdir.exists()


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


@pytest.mark.slow
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


def test_the_module_dispatcher_names_its_tools():
    result = _run(["-m", "ltx.cli", "evaluate"])
    _assert_one_line_error(result, "ltx.cli", "'eval'", "'predict'")
