"""Every file in configs/ (globbed, so a new config is covered at once): `tiny=1` is a smoke run
(a shrunk model, every stage at most one epoch, the schedule rescaled, the static check passes),
`epochs=N` rescales the recipe, and `tiny=1` trains to its final metrics from data made here or
kept under tests/fixtures."""

import glob
import json
import math
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from helpers import check_finished_workdir
from ltx import config_check, config_lib, stages
from ltx.data import cifar, image_lists

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path, arg=None):
    return config_lib.load_config_file(path, arg)


def _stages(config):
    """[(stage name, the stage's whole config)]; one unnamed stage for a single run."""
    return [(name, stage) for name, stage, _ in config_lib.stage_configs(config)] or [
        ("", config)]


def _floor(value, n, reference):
    return value * n // reference if isinstance(value, int) else value * n / reference


def _expected_schedule(full_stage, n, reference):
    """What `epochs=n` must make of a stage of the `reference`-epoch recipe, from the rule the
    configs document: every epoch count times n / reference, rounded down; lengths and periods
    at least 1 (0 stays 0), decay points that reach 0 dropped, -1 (every epoch) kept."""
    def period(e):
        return max(_floor(e, n, reference), 1) if e > 0 else e

    def index(e):
        return _floor(e, n, reference) if e > 0 else e

    method = {k: index(v) for k, v in full_stage.method.items()
              if k.endswith("_epoch") and not isinstance(v, bool)}
    return dict(
        num_epochs=max(_floor(full_stage.num_epochs, n, reference), 1),
        warmup_epochs=index(full_stage.schedule.warmup_epochs),
        decay_epochs=tuple(e for e in (_floor(d, n, reference)
                                       for d in full_stage.schedule.decay_epochs) if e > 0),
        mixup_epochs=index(full_stage.mixup_epochs),
        checkpoint_every=period(full_stage.checkpoint.every_epochs),
        eval_every=period(full_stage.eval.every_epochs), method=method)


def _schedule(stage):
    return dict(
        num_epochs=stage.num_epochs, warmup_epochs=stage.schedule.warmup_epochs,
        decay_epochs=tuple(stage.schedule.decay_epochs), mixup_epochs=stage.mixup_epochs,
        checkpoint_every=stage.checkpoint.every_epochs, eval_every=stage.eval.every_epochs,
        method={k: v for k, v in stage.method.items()
                if k.endswith("_epoch") and not isinstance(v, bool)})


def _with_data_placeholders(config):
    """A list-file dataset's image root is the user's: an existing folder stands in for the
    static check (which checks that it exists, not what it holds)."""
    if "root" in config.data and not config.data.root:
        config.data.root = ROOT
        if config.data.get("num_classes") == 0:
            config.data.num_classes = 10
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_tiny_is_a_one_epoch_smoke_run_that_passes_the_static_check(path):
    full, tiny = _load(path), _load(path, "tiny=1")
    # Everything but the model and the lengths is the recipe's: optimizer, data, method.
    for key in ("optimizer", "data", "teacher"):
        assert tiny[key].to_dict() == full[key].to_dict(), key
    assert (tiny.batch_size, tiny.mixup_alpha) == (full.batch_size, full.mixup_alpha)
    assert {k: v for k, v in tiny.method.items() if not k.endswith("_epoch")} == {
        k: v for k, v in full.method.items() if not k.endswith("_epoch")}
    checked = _with_data_placeholders(ml_collections.ConfigDict(tiny.to_dict()))
    assert config_check.problems(checked, built=False) == []
    full_stages, tiny_stages = _stages(full), _stages(tiny)
    assert [n for n, _ in tiny_stages] == [n for n, _ in full_stages]
    for (name, f), (_, t) in zip(full_stages, tiny_stages):
        assert t.num_epochs == 1, name
        expected = _expected_schedule(f, 1, full.num_epochs)
        # Periodic evaluation is off in a smoke run (the final one remains).
        assert _schedule(t) == dict(expected, eval_every=0), name
        assert all(0 < e <= 1 for e in t.schedule.decay_epochs), name
        # The model: one block per stage at a quarter of the widths.
        assert tuple(t.model.widths) == tuple(max(w // 4, 2) for w in f.model.widths), name
        if f.model.name == "resnet32":
            assert t.model.blocks_per_stage == 1, name
        else:
            assert t.model.name == config_lib.TINY_IMAGENET_ARCH, name
        assert t.checkpoint.async_save is False


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_epochs_rescales_every_stage_and_its_schedule(path):
    full, short = _load(path), _load(path, "epochs=2")
    assert short.num_epochs == 2
    assert config_check.problems(_with_data_placeholders(short), built=False) == []
    full_stages, short_stages = _stages(full), _stages(short)
    assert [n for n, _ in short_stages] == [n for n, _ in full_stages]
    for (name, f), (_, s) in zip(full_stages, short_stages):
        assert _schedule(s) == _expected_schedule(f, 2, full.num_epochs), name
        assert s.model.to_dict() == f.model.to_dict(), name  # Only tiny shrinks the model.
    # The recipe's own length changes nothing; tiny=1 with epochs keeps them.
    same = _load(path, f"epochs={full.num_epochs}")
    assert same.to_dict() == full.to_dict()
    assert _load(path, "tiny=1,epochs=2").num_epochs == 2


def test_epochs_is_the_way_to_shorten_a_run_and_the_check_says_so():
    path = os.path.join(ROOT, "configs", "cifar100_lt_balpoe.py")
    config = _load(path)
    config.num_epochs = 2  # As --config.num_epochs=2 sets it: the decay epochs no longer fit.
    found = config_check.problems(config, built=False)
    assert len(found) == 1 and ":epochs=N" in found[0] and "(160, 180)" in found[0]
    short = _load(path, "epochs=2")  # What the message asks for is accepted.
    assert config_check.problems(short, built=False) == []
    assert short.schedule.decay_epochs == (1, 1) and short.schedule.warmup_epochs == 0


@pytest.mark.parametrize("arg, message", [
    ("epochs=0", "epochs=0; expected an integer >= 1"),
    ("epochs=-3", "epochs=-3; expected an integer >= 1"),
    ("epochs=two", "'epochs=two'; expected a int value for epochs"),
    ("tiny=2", "tiny=2; expected tiny=0 or tiny=1"),
    ("tiny=yes", "'tiny=yes'; expected a int value for tiny"),
    ("epoch=2", "did you mean 'epochs'?"),
    ("tinny=1", "did you mean 'tiny'?"),
    ("epochs", "expected key=value with key in ['epochs', 'ir', 'mixup', 'tiny']"),
])
def test_bad_config_arguments_are_named_with_what_is_expected(arg, message):
    with pytest.raises(ValueError) as err:
        _load(os.path.join(ROOT, "configs", "cifar100_lt_balpoe.py"), arg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_parse_arg_adds_tiny_and_makes_epochs_default_to_one_under_it():
    assert config_lib.parse_arg(None, ir=10.0, epochs=60) == dict(ir=10.0, epochs=60, tiny=False)
    assert config_lib.parse_arg("tiny=1", ir=10.0, epochs=60) == dict(ir=10.0, epochs=1,
                                                                      tiny=True)
    assert config_lib.parse_arg("tiny=1,epochs=7,ir=5", ir=10.0, epochs=60) == dict(
        ir=5.0, epochs=7, tiny=True)
    assert config_lib.parse_arg("tiny=1", ir=10.0) == dict(ir=10.0, tiny=True)
    with pytest.raises(ValueError, match="must not declare it"):
        config_lib.parse_arg(None, tiny=0)


def _recipe():
    """A 200-epoch recipe with a second stage of 5 epochs, as RIDE's router."""
    c = config_lib.base_config()
    c.mixup_epochs = 199
    c.method = ml_collections.ConfigDict(dict(name="x", drw_epoch=160, calibration_epochs=60,
                                              distill=True))
    c.stage_order = ("main", "router")
    c.stages.main = ml_collections.ConfigDict()
    c.stages.router = ml_collections.ConfigDict({
        "num_epochs": 5, "schedule": {"warmup_epochs": 0, "decay_epochs": (3,)},
        "checkpoint": {"every_epochs": 5}, "eval": {"every_epochs": 0}})
    return c


def test_scale_epochs_moves_every_epoch_count_by_the_same_factor_rounding_down():
    c = config_lib.scale_epochs(_recipe(), 20)
    assert c.num_epochs == 20
    assert c.schedule.decay_epochs == (16, 18) and c.schedule.warmup_epochs == 0  # 0.5 -> 0.
    assert c.mixup_epochs == 19  # The last epoch stays mixup-free.
    assert c.method.drw_epoch == 16 and c.method.calibration_epochs == 60  # Not a schedule.
    assert c.eval.every_epochs == 2 and c.checkpoint.every_epochs == 2
    router = c.stages.router
    assert router.num_epochs == 1 and router.schedule.decay_epochs == ()  # 0.5 -> 1; 0.3 -> -.
    assert router.checkpoint.every_epochs == 1 and router.eval.every_epochs == 0
    kept = config_lib.scale_epochs(_recipe(), 20, keep_stages=("router",))
    assert kept.stages.router.to_dict() == _recipe().stages.router.to_dict()
    assert config_lib.scale_epochs(_recipe(), 200).to_dict() == _recipe().to_dict()


def test_scale_epochs_refuses_what_it_cannot_scale():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"epochs=.*expected an integer >= 1"):
            config_lib.scale_epochs(_recipe(), bad)
    with pytest.raises(ValueError, match=r"keep_stages=\('expert',\) names \['expert'\]"):
        config_lib.scale_epochs(_recipe(), 20, keep_stages=("expert",))


def test_an_explicit_expert_length_is_kept_as_written():
    path = os.path.join(ROOT, "configs", "digits_lt_cbe.py")
    stages = dict(_stages(_load(path, "epochs=30,expert_epochs=4")))
    assert stages["baseline"].num_epochs == 30
    assert [stages[n].num_epochs for n in ("many", "medium", "few")] == [4, 4, 12]
    assert stages["many"].schedule.decay_epochs == (2,)
    scaled = dict(_stages(_load(path, "epochs=30")))  # The default 10 / 30, scaled by 1/2.
    assert [scaled[n].num_epochs for n in ("many", "medium", "few")] == [5, 5, 15]


def test_a_config_file_with_the_older_decorator_gets_both_arguments(tmp_path):
    path = tmp_path / "old_style.py"
    path.write_text(
        "from ltx import config_lib\n\n\n"
        "@config_lib.tiny_option\n"
        "def get_config(arg=None):\n"
        "    args = config_lib.parse_arg(arg, ir=10.0)\n"
        "    return config_lib.digits_lt_config(imbalance_ratio=args['ir'])\n")
    assert _load(str(path)).num_epochs == 60
    short = _load(str(path), "ir=20,epochs=6")
    assert short.num_epochs == 6 and short.schedule.decay_epochs == (4, 5)
    assert short.data.imbalance_ratio == 20.0
    tiny = _load(str(path), "tiny=1")
    assert tiny.num_epochs == 1 and tiny.model.blocks_per_stage == 1


def test_an_unknown_override_is_one_line_naming_the_key_and_the_close_fields():
    config = _load(os.path.join(ROOT, "configs", "digits_lt_balpoe.py"))
    message = config_lib.unknown_override(config, ["--config.seed=2", "--config.optimzer.lr=1"])
    assert message == ("--config.optimzer.lr: config has no field 'optimzer'; did you mean "
                       "'optimizer'?")
    assert config_lib.unknown_override(config, ["optimizer.lrr"]) == (
        "--config.optimizer.lrr: config.optimizer has no field 'lrr'; did you mean 'lr'?")
    assert config_lib.unknown_override(config, ["--config.seed.x=1"]) == (
        "--config.seed.x: config.seed is a value, not a group of fields")
    assert "did you mean" not in config_lib.unknown_override(config, ["--config.zzz=1"])
    assert config_lib.unknown_override(config, ["--config.optimizer.lr=0.2", "seed"]) is None


def test_ltx_train_names_a_misspelt_override_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ltx.train", "--config=configs/digits_lt_ce.py:tiny=1",
         f"--workdir={tmp_path / 'run'}", "--config.optimzer.lr=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "ltx-train: error: --config.optimzer.lr: config has no field 'optimzer'; did you mean "
        "'optimizer'?")
    assert not os.path.exists(tmp_path / "run")


# -- end to end: `tiny=1` trains to its final metrics ------------------------------------------

LIST_FILE_DATASETS = {"imagenet_lt": 1000, "inaturalist2018": 8142, "places_lt": 365}
# Images per class of the generated data, for the first classes: enough for every shot group
# (many >= 100, medium 20-99, few < 20), which the class-balanced experts each train on.
TREE_COUNTS = {"train": (110, 30, 5), "val": (4, 4, 4), "test": (4, 4, 4)}


def _write_image(path, seed, size=(20, 16)):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=85)


@pytest.fixture(scope="module")
def list_tree(tmp_path_factory):
    """One root for the list-file datasets: TREE_COUNTS images of classes 0-2 under
    <root>/<split>/c<label>/ and each dataset's list files under the reference names
    (`image_lists.DEFAULT_LISTS`). Every other class of the dataset gets one training line
    (an image of class 2 again): losses built on the class counts (LDAM's margins, RIDE's and
    DRW's weights) need every class seen, as in the real datasets."""
    root = tmp_path_factory.mktemp("lists")
    lines, seed = {}, 0
    for split, counts in TREE_COUNTS.items():
        lines[split] = []
        for label, count in enumerate(counts):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                _write_image(folder / f"{i}.jpg", seed=seed)
                lines[split].append(f"{split}/c{label}/{i}.jpg {label}\n")
    for name, num_classes in LIST_FILE_DATASETS.items():
        rest = [f"train/c2/{label % TREE_COUNTS['train'][2]}.jpg {label}\n"
                for label in range(len(TREE_COUNTS["train"]), num_classes)]
        for split, list_name in zip(("train", "val", "test"), image_lists.DEFAULT_LISTS[name]):
            if list_name:
                (root / list_name).write_text("".join(lines[split] + (
                    rest if split == "train" else [])))
    return str(root)


@pytest.fixture(scope="module")
def folder_tree(tmp_path_factory):
    """`<root>/{train,val,test}/<class>/<image>` with its lists (`ltx-prepare folders`)."""
    root = tmp_path_factory.mktemp("folders")
    seed = 0
    for split, counts in TREE_COUNTS.items():
        for label, count in enumerate(counts):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                _write_image(folder / f"{i}.jpg", seed=seed)
    image_lists.write_folder_lists(str(root))
    return str(root)


@pytest.fixture(scope="module")
def cifar_dirs(tmp_path_factory):
    """Prepared CIFAR folders of random images in the official format (`ltx-prepare`). At
    ratio 100 every class keeps images (the count-based losses need them; the TFDS fixture's 10
    per class leaves classes empty): CIFAR-100 120 ... 1 (2,568 in all, with classes of >= 100,
    20-99 and < 20 images for the class-balanced experts), CIFAR-10 600 ... 6 (1,485, more than
    the largest configured batch, 512)."""
    data_dir = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    for name, num_classes, per_class in (("cifar10", 10, 600), ("cifar100", 100, 120)):
        data = {}
        for split, n in (("train", per_class), ("test", 10)):
            labels = np.tile(np.arange(num_classes), n)
            data[split] = (rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8),
                           labels)
        tarball = str(data_dir / f"{name}.tar.gz")
        cifar.write_tarball(tarball, name, data)
        cifar.prepare(name, tarball, str(data_dir))
    return str(data_dir)


def _data(config, request):
    """(extra config arguments, --config overrides) that point `config` at test data."""
    name = config.data.name
    # The 224 crops are tested in test_image_lists; 32 keeps a CPU run to seconds.
    small = ["--config.data.augment.crop_size=32", "--config.data.augment.eval_resize=36"]
    if name == "digits_lt":  # scikit-learn's bundled digits.
        return "", []
    if name in ("cifar10_lt", "cifar100_lt"):
        return "", [f"--config.data.data_dir={request.getfixturevalue('cifar_dirs')}"]
    if name in LIST_FILE_DATASETS:
        tree = request.getfixturevalue("list_tree")
        return "", [f"--config.data.root={tree}", *small]
    if name == "list_files":
        return f",root={request.getfixturevalue('folder_tree')}", []
    raise AssertionError(f"{config.data.name!r}: no test data for this dataset; add it here")


def _override(config, assignment):
    """Applies one `--config.<dotted key>=<value>` to `config`, typed as the field is."""
    key, _, value = assignment[len("--config."):].partition("=")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[leaf] = type(node[leaf])(value)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_tiny_trains_to_its_final_metrics(path, tmp_path, request):
    arg, overrides = _data(_load(path, "tiny=1"), request)
    workdir = tmp_path / "run"
    # What `ltx-train --config=<path>:tiny=1 --workdir=...` runs (its flags are tested in
    # test_cli), in this process: one import of JAX for every config; the data are read in the
    # main process (no grain workers).
    config = _load(path, f"tiny=1{arg}")
    for assignment in [*overrides, "--config.data.num_workers=0"]:
        _override(config, assignment)
    config_check.check(config, built=False)
    stages.train(config, str(workdir))
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert math.isfinite(final["nll"]) and 0.0 <= final["top1_all"] <= 100.0, final
    configs = sorted(glob.glob(str(workdir / "**" / "config.json"), recursive=True))
    assert configs  # One per stage of a multi-stage config.
    for saved in configs:
        assert json.loads(open(saved).read())["num_epochs"] == 1, saved
    if config.data.name == "digits_lt":  # ltx-eval, ltx-predict and ltx.stats on the workdir.
        _check_digits_workdir(os.path.basename(path)[:-3], str(workdir), final, config)


def _check_digits_workdir(name, workdir, final, config):
    evaluated = check_finished_workdir(workdir, final, config.method.name)
    if name == "digits_lt_ride":  # The router cascade, with its experts per image.
        assert evaluated["routing"]["avg_experts"] == pytest.approx(final["avg_experts"])
    if name == "digits_lt_cbe":  # The fused experts: every fusion reported, as the run printed.
        with open(os.path.join(workdir, "fusion.json")) as f:
            printed = json.load(f)
        for split in ("test", "val"):
            for fusion, row in printed[split].items():
                for key, value in row.items():
                    assert evaluated["fusions"][split][fusion][key] == pytest.approx(
                        value, abs=1e-4), (split, fusion, key)
        assert evaluated["meta"]["prior_correction"] is False
        assert evaluated["meta"]["evals"][-1] == "fusions"  # The cbe home's evaluator.
    if name in ("digits_lt_ce", "digits_lt_la"):  # Named as the literature names them.
        assert final["method"] == name.split("_")[-1]


# -- bfloat16 for the baselines' homes ---------------------------------------------------------

# Each home with its own model wrapper, finish step, constraint or loss (the other losses only
# see float32 logits, as these do).
BFLOAT16_HOMES = ["digits_lt_ce_crt", "digits_lt_ce_lws", "digits_lt_ce_tau_norm",
                  "digits_lt_ce_ncm", "digits_lt_mislas", "digits_lt_weight_balancing",
                  "digits_lt_lade", "digits_lt_cb_focal", "digits_lt_balanced_softmax"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BFLOAT16_HOMES)
def test_baseline_homes_train_and_predict_in_bfloat16(name, tmp_path):
    """config.model.dtype='bfloat16' through every stage: finite final metrics, float32
    parameters and logits, and the final model's logits within bfloat16's rounding of the same
    variables computed in float32 (and not equal to them: bfloat16 did run)."""
    import jax
    from helpers import test_images
    from ltx import methods, workdirs
    from ltx.data import augment
    config = _load(os.path.join(ROOT, "configs", f"{name}.py"), "tiny=1")
    config.model.dtype = "bfloat16"
    config.data.num_workers = 0
    workdir = str(tmp_path / "run")
    stages.train(config, workdir)
    final = json.loads(open(os.path.join(workdir, "final_metrics.json")).read())
    assert math.isfinite(final["nll"]), final
    predictor = workdirs.final_predictor(workdir)
    assert predictor.config.model.dtype == "bfloat16"
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(predictor.variables))
    dataset = predictor.dataset
    images = augment.normalize(test_images(dataset), dataset.mean, dataset.std)
    _, logits = predictor.predict_images(images)
    assert logits.dtype == np.float32
    float32 = ml_collections.ConfigDict(predictor.config.to_dict())
    float32.model.dtype = "float32"
    _, model = methods.build_with_model(float32, dataset.class_counts)
    reference = predictor.with_variables(predictor.variables, predictor.step)
    reference.model, reference._forward = model, None
    _, expected = reference.predict_images(images)
    gap = np.abs(logits - expected).max()
    assert 0 < gap <= 0.05 * np.abs(expected).max() + 1e-3, (gap, np.abs(expected).max())
