"""ltx.config_check: every shipped config passes, and each bad value of the catalogue below is
reported before any data, device or model work, naming its key and value."""

import glob
import os
import subprocess
import sys

import pytest

from helpers import CONFIG_DIR, load_config
from ltx import config_check, config_lib

CONFIG_NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR,
                                                                             "*.py")))


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_and_its_tiny_form_pass(name):
    config = load_config(name)
    if "root" in config.data:  # A list-file dataset: the image root is the user's.
        assert any("config.data.root is empty" in p for p in config_check.problems(config))
        config.data.root = CONFIG_DIR
        if config.data.get("num_classes") == 0:  # From the data, which there is none of here.
            config.data.num_classes = 10
    assert config_check.problems(config) == []
    if name.startswith("digits_lt"):
        assert config_check.problems(load_config(name, "tiny=1,epochs=1")) == []


# (config, key, bad value, what the message must contain). Values are set on the config as a
# --config.<key>=<value> override would set them; a value of the wrong type (a string for a
# bool) is refused by ml_collections itself when the flag is parsed (tests/test_cli.py).
CATALOGUE = [
    ("digits_lt_balpoe", "batch_size", 0, "config.batch_size=0; expected >= 1"),
    ("digits_lt_balpoe", "batch_size", -64, "config.batch_size=-64"),
    ("digits_lt_balpoe", "num_epochs", 0, "config.num_epochs=0; expected > 0"),
    ("digits_lt_balpoe", "num_epochs", -3, "config.num_epochs=-3"),
    ("digits_lt_balpoe", "optimizer.lr", float("nan"), "config.optimizer.lr=nan"),
    ("digits_lt_balpoe", "log_every_steps", 0, "config.log_every_steps=0"),
    ("digits_lt_balpoe", "mixup_alpha", -1.0, "config.mixup_alpha=-1.0"),
    ("digits_lt_balpoe", "data.name", "digits", "config.data.name='digits'; expected one of"),
    ("digits_lt_balpoe", "data.imbalance_ratio", 0.0, "config.data.imbalance_ratio=0.0"),
    ("digits_lt_balpoe", "data.imbalance_ratio", 0.5, "expected >= 1"),
    ("digits_lt_balpoe", "data.profile", "linear", "config.data.profile='linear'"),
    ("digits_lt_balpoe", "data.sampler", "balanced", "config.data.sampler='balanced'"),
    ("digits_lt_balpoe", "data.last_batch", "keep", "config.data.last_batch='keep'"),
    ("digits_lt_balpoe", "data.num_workers", -2, "config.data.num_workers=-2"),
    ("digits_lt_balpoe", "data.augment.kind", "autoaugment", "config.data.augment.kind="),
    ("digits_lt_balpoe", "data.augment.crop_padding", -4, "config.data.augment.crop_padding=-4"),
    ("digits_lt_balpoe", "data.data_dir", "/no/such/dir", "'/no/such/dir'; expected a data dir"),
    ("digits_lt_balpoe", "model.name", "resnet18", "config.model.name='resnet18'"),
    ("digits_lt_balpoe", "model.widths", (16, 32), "config.model.widths=(16, 32); expected 3"),
    ("digits_lt_balpoe", "model.widths", (16, 0, 64), "positive stage widths"),
    ("digits_lt_balpoe", "model.blocks_per_stage", 0, "config.model.blocks_per_stage=0"),
    ("digits_lt_balpoe", "model.num_shared_stages", 5, "config.model.num_shared_stages=5"),
    ("digits_lt_balpoe", "model.head", "cosine_linear", "config.model.head='cosine_linear'"),
    ("digits_lt_balpoe", "model.cosine_scale", 0.0, "config.model.cosine_scale=0.0"),
    ("digits_lt_balpoe", "model.expert_strategy", "loop", "config.model.expert_strategy='loop'"),
    ("digits_lt_balpoe", "model.bn_running_var", "pytorch", "config.model.bn_running_var="),
    ("digits_lt_balpoe", "model.init_checkpoint", "/no/such.ckpt", "'/no/such.ckpt'; expected"),
    ("digits_lt_balpoe", "method.name", "balpoe2", "config.method.name='balpoe2'"),
    ("digits_lt_balpoe", "optimizer.name", "adam", "config.optimizer.name='adam'"),
    ("digits_lt_balpoe", "optimizer.lr", 0.0, "config.optimizer.lr=0.0; expected > 0"),
    ("digits_lt_balpoe", "optimizer.lr", float("inf"), "config.optimizer.lr=inf"),
    ("digits_lt_balpoe", "optimizer.momentum", 1.0, "config.optimizer.momentum=1.0"),
    ("digits_lt_balpoe", "optimizer.weight_decay", -5e-4, "config.optimizer.weight_decay="),
    ("digits_lt_balpoe", "schedule.name", "linear", "config.schedule.name='linear'"),
    ("digits_lt_balpoe", "schedule.granularity", "batch", "config.schedule.granularity="),
    ("digits_lt_balpoe", "schedule.warmup_epochs", -1, "config.schedule.warmup_epochs=-1"),
    ("digits_lt_balpoe", "eval.shot_convention", "lt", "config.eval.shot_convention='lt'"),
    ("digits_lt_balpoe", "eval.batch_size", 0, "config.eval.batch_size=0"),
    ("digits_lt_balpoe", "eval.num_bins", 0, "config.eval.num_bins=0"),
    ("digits_lt_balpoe", "eval.every_epochs", -1, "config.eval.every_epochs=-1"),
    ("digits_lt_balpoe", "checkpoint.max_to_keep", 0, "config.checkpoint.max_to_keep=0"),
    ("digits_lt_balpoe", "checkpoint.every_epochs", -2, "config.checkpoint.every_epochs=-2"),
    ("digits_lt_balpoe", "teacher.workdir", "/no/such/run", "config.teacher.workdir="),
    ("digits_lt_ldam_drw", "schedule.decay_epochs", (30, 500), "(30, 500) has [500] outside"),
    ("digits_lt_ldam_drw", "schedule.decay_factor", 0.0, "config.schedule.decay_factor=0.0"),
    ("imagenet_lt_ce", "data.root", "", "config.data.root is empty"),
    ("imagenet_lt_ce", "data.augment.kind", "cifar", "'cifar'; expected 'imagenet'"),
    ("imagenet_lt_ce", "model.widths", (64, 128), "expected 4 positive stage widths"),
    ("digits_lt_balpoe", "pack.form", "serial",
     "config.pack.form='serial'; expected one of ['auto', 'loop', 'scan', 'vmap']"),
    ("imagenet_lt_ce", "data.augment.crop_size", 0, "config.data.augment.crop_size=0"),
]


def test_what_each_field_accepts_is_declared_beside_a_field_its_helper_sets():
    """The declarations of `config_lib` follow its helpers' fields: none names a field that
    its helper does not set (a renamed field cannot leave a check behind), and the registries
    they name exist."""
    from ltx.config_check import _Checker, _MISSING, _registry
    base = config_lib.base_config()
    fixed = config_lib.add_fixed_size_data(config_lib.base_config(), "digits_lt",
                                           imbalance_ratio=10.0)
    listed = config_lib.add_list_file_data(config_lib.base_config(), "list_files")
    resnet = config_lib.add_cifar_resnet(config_lib.base_config())
    for fields, config in [(config_lib.BASE_FIELDS, base),
                           (config_lib.LONG_TAIL_FIELDS, fixed), (config_lib.LONG_TAIL_FIELDS,
                                                                  listed),
                           (config_lib.FIXED_SIZE_FIELDS, fixed),
                           (config_lib.CIFAR_AUGMENT_FIELDS, fixed),
                           (config_lib.LIST_FILE_FIELDS, listed),
                           (config_lib.IMAGENET_AUGMENT_FIELDS, listed),
                           (config_lib.CIFAR_RESNET_FIELDS, resnet)]:
        for key, rule in fields.items():
            assert _Checker(config).get(key) is not _MISSING, key
            if rule.kind == "choice":
                assert _registry(rule.options), key


def _set(config, key, value):
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


@pytest.mark.parametrize("name, key, value, expected", CATALOGUE,
                         ids=[f"{k}={v!r}" for _, k, v, _ in CATALOGUE])
def test_each_bad_value_is_named_by_the_static_check(name, key, value, expected):
    config = load_config(name)
    if name == "imagenet_lt_ce" and key != "data.root":
        config.data.root = CONFIG_DIR  # Any existing folder: isolate the value under test.
    _set(config, key, value)
    found = config_check.problems(config, built=False)
    assert any(expected in p for p in found), found
    with pytest.raises(config_check.ConfigError, match=key.replace(".", r"\.")):
        config_check.check(config, built=False)


def test_every_problem_is_listed_at_once():
    config = load_config("digits_lt_balpoe")
    config.batch_size = 0
    config.optimizer.lr = -0.1
    config.eval.shot_convention = "lt"
    with pytest.raises(config_check.ConfigError) as err:
        config_check.check(config)
    assert len(err.value.problems) == 3, err.value.problems
    message = str(err.value)
    assert message.startswith("3 problem(s) in the config:")
    for key in ("batch_size=0", "optimizer.lr=-0.1", "shot_convention='lt'"):
        assert key in message


def test_a_stage_problem_names_its_stage():
    config = load_config("digits_lt_ride")
    config.stages.router.optimizer = {"lr": -1.0}
    found = config_check.problems(config, built=False)
    assert found == ["stage 'router': config.optimizer.lr=-1.0; expected > 0"], found


def test_a_misspelt_stage_override_is_named():
    config = load_config("digits_lt_ride")
    config.stages.router.num_epoch = 3
    found = config_check.problems(config)
    assert len(found) == 1 and "config.stages.router.num_epoch" in found[0], found


@pytest.mark.parametrize("name, field, value, expected", [
    # The build tier: what only the method, model or schedule constructors know.
    ("digits_lt_ride", "method.distill_multiplicity", "twice", "distill_multiplicity='twice'"),
    ("digits_lt_ace", "method.thresholds", (0.1, 0.4), "threshold"),
    ("digits_lt_balpoe", "batch_size", 30, "config.batch_size=30 is not divisible by the 4"),
    ("digits_lt_balpoe", "eval.batch_size", 250, "config.eval.batch_size=250 is not divisible"),
])
def test_the_build_tier_names_what_the_constructors_reject(name, field, value, expected):
    config = load_config(name)
    _set(config, field, value)
    assert config_check.problems(config, built=False) == []
    found = config_check.problems(config)
    assert any(expected in p for p in found), found


def test_stand_in_counts_are_long_tailed_with_the_ratio():
    counts = config_check.stand_in_counts(10, 10.0)
    assert counts[0] == 100 and counts[-1] == 10
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_the_static_check_starts_no_jax_backend():
    """jax.distributed.initialize() must come before any backend starts; the static tier runs
    before it, so neither it nor the modules it imports may create a JAX array."""
    code = ("import sys; sys.path.insert(0, 'tests')\n"
            "import jax._src.xla_bridge as xb\n"
            "from helpers import tiny_config\n"
            "from ltx import config_check\n"
            "assert config_check.problems(tiny_config(), built=False) == []\n"
            "print(sorted(xb._backends))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(__file__), os.pardir), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_a_launch_checks_each_stage_config_once_per_tier(tmp_path, monkeypatch):
    """ltx.train's static check, stages.train's full check and each stage's Run all ask; each
    tier runs once per distinct stage config."""
    from helpers import tiny_config
    from ltx import stages

    counts = {"static": 0, "built": 0}
    for tier, name in (("static", "_static_problems"), ("built", "_built_problems")):
        original = getattr(config_check, name)

        def counted(config, original=original, tier=tier):
            counts[tier] += 1
            return original(config)

        monkeypatch.setattr(config_check, name, counted)
    monkeypatch.setattr(config_check, "_PASSED", set())
    config = tiny_config("digits_lt_ride")
    config_check.check(config, built=False)  # What ltx.train does before JAX starts.
    stages.train(config, str(tmp_path / "run"))
    # Once per distinct stage config: experts, router before it starts, and router with its
    # link to the finished experts set (model.init_checkpoint).
    assert counts == {"static": 3, "built": 3}
    # A changed config is checked again, and a bad one is never remembered as good.
    with config.unlocked():
        config.eval.batch_size = 30
    with pytest.raises(config_check.ConfigError, match="eval.batch_size=30"):
        config_check.check(config)
    with pytest.raises(config_check.ConfigError, match="eval.batch_size=30"):
        config_check.check(config)
