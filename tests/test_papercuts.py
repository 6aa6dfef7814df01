"""The papercuts of a newcomer's first run (issue 31): class names where the data names its
classes, strict JSON with one mark for an undefined metric, `--help` of every tool, no leaked
shared memory, an immediate busy-workdir refusal, the official CIFAR tarballs' SHA-256, a stats
tool that reads no data, and no silent loss of data to a long-tailed subset."""

import importlib.util
import json
import os
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
from PIL import Image

from helpers import CONFIG_DIR, load_config
from ltx import evaluation, faults, files
from ltx.data import cifar, datasets, digits, image_lists, long_tail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("ant", "bee", "cat", "dog")
CUSTOM = os.path.join(CONFIG_DIR, "custom_lt.py")
TFDS_DATA = os.path.join(os.path.dirname(__file__), "fixtures", "tfds", "data")
LEAK = "leaked shared_memory"


def _run(args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kwargs)


def _strict_json(path):
    """The JSON of `path` read by a strict parser (NaN, Infinity refused)."""
    def refuse(constant):
        raise ValueError(f"{path} holds the non-JSON constant {constant}")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def _tree(root, counts, test_per_class=3):
    """<root>/{train,test}/<class>/<i>.png, `counts` training images of CLASSES[i] (one colour
    per class plus noise), and its list files."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, count in enumerate(counts):
            folder = os.path.join(root, split, CLASSES[label])
            os.makedirs(folder)
            for i in range(count if split == "train" else test_per_class):
                colour = np.array([60 * label, 255 - 60 * label, 40 + 50 * (label % 2)])
                pixels = np.clip(colour + rng.normal(0, 20, (12, 12, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"{i}.png"))
    image_lists.write_folder_lists(root)
    return root


@pytest.fixture(scope="module")
def named_tree(tmp_path_factory):
    """A balanced 4-class tree of 10 training images per class, named in classes.txt."""
    return _tree(str(tmp_path_factory.mktemp("named")), [10] * 4)


@pytest.fixture(scope="module")
def custom_run(named_tree, tmp_path_factory):
    """(workdir, CompletedProcess) of `python -m ltx.train` on the named tree: one epoch of the
    tiny model, read by one grain worker process."""
    workdir = str(tmp_path_factory.mktemp("custom") / "run")
    result = _run(["-m", "ltx.train", f"--config={CUSTOM}:root={named_tree},tiny=1,epochs=1",
                   f"--workdir={workdir}", "--config.batch_size=8",
                   "--config.data.num_workers=1"])
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


# -- a. class names ---------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_shows_the_class_names_of_classes_txt(custom_run, named_tree):
    workdir, _ = custom_run
    result = _run(["-m", "ltx.cli", "predict", f"--workdir={workdir}",
                   os.path.join(named_tree, "test", "cat"), "--top_k=4"])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if ".png: " in line]
    assert len(lines) == 3
    for line in lines:
        shown = [item.split(" (")[0] for item in line.split(": ", 1)[1].split(", ")]
        assert sorted(shown) == sorted(CLASSES), line  # Names, every class once; no indices.


def test_class_names_come_from_the_data_and_none_where_it_names_none(named_tree, tmp_path):
    config = load_config("custom_lt", f"root={named_tree}")
    assert datasets.class_names(config.data) == list(CLASSES)
    assert datasets.class_names(load_config("digits_lt_ce").data) == [str(d) for d in range(10)]
    # A TFDS dataset's label names (the fixture's are placeholders).
    tfds_config = load_config("cifar100_lt_balpoe", "ir=10")
    tfds_config.data.source, tfds_config.data.tfds_data_dir = "tfds", TFDS_DATA
    names = datasets.class_names(tfds_config.data)
    assert names[:2] == ["fine_00", "fine_01"] and len(names) == 100
    # Lists without classes.txt: indices.
    image_lists.write_folder_lists(named_tree, str(tmp_path))
    os.remove(tmp_path / image_lists.CLASSES_FILE)
    config.data.list_dir = str(tmp_path)
    assert datasets.class_names(config.data) is None


# -- b. strict JSON, one mark for an undefined metric ----------------------------------------

def test_write_json_is_strict_json_with_null_for_undefined_numbers(tmp_path):
    path = str(tmp_path / "final_metrics.json")
    files.write_json(path, {"top1_many": float("nan"), "ece": np.float32(1.5),
                            "groups": [np.nan, np.inf, -np.inf, 2], "steps": np.int64(9),
                            "counts": np.arange(3), "ok": np.bool_(True)})
    assert _strict_json(path) == {"top1_many": None, "ece": 1.5, "groups": [None, None, None, 2],
                                  "steps": 9, "counts": [0, 1, 2], "ok": True}


def test_tables_show_an_undefined_metric_as_the_one_mark():
    row = {"top1_all": 50.0, "top1_many": float("nan"), "top1_medium": None, "top1_few": 50.0,
           "nll": 1.25, "ece": 3.0, "mce": np.float32(np.nan), "top1_expert0": None,
           "top1_expert1": 40.0}
    table = evaluation.format_table({"test": row})
    assert "nan" not in table.lower()
    cells = table.splitlines()[2].split()
    assert cells == ["test", "50.00", "-", "-", "50.00", "1.25", "3.00", "-"]
    assert table.splitlines()[3] == "test per-expert top1_all: -, 40.00"
    assert evaluation.UNDEFINED == "-"  # The mark of ltx-eval's report.md and ltx-sweep.


@pytest.mark.slow
def test_a_run_with_empty_shot_groups_writes_null_and_shows_the_mark(custom_run, named_tree):
    workdir, result = custom_run
    # 10 images per class: every class is 'few' (n < 20), 'many' and 'medium' are empty.
    final = _strict_json(os.path.join(workdir, "final_metrics.json"))
    assert final["top1_many"] is None and final["top1_medium"] is None
    assert 0 <= final["top1_few"] <= 100
    test_row = next(line for line in result.stdout.splitlines() if line.startswith("test "))
    assert test_row.split()[2:4] == ["-", "-"] and "nan" not in result.stdout
    # A finished workdir reports the stored metrics in the same table.
    again = _run(["-m", "ltx.train", f"--config={CUSTOM}:root={named_tree},tiny=1,epochs=1",
                  f"--workdir={workdir}", "--config.batch_size=8", "--config.data.num_workers=1"])
    assert again.returncode == 0, again.stderr[-3000:]
    row = next(line for line in again.stdout.splitlines() if line.startswith("test "))
    assert row.split()[2:4] == ["-", "-"] and "nan" not in again.stdout


@pytest.mark.slow
def test_ltx_eval_writes_strict_json(custom_run):
    workdir, _ = custom_run
    result = _run(["-m", "ltx.cli", "eval", f"--workdir={workdir}", "--nopictures"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = _strict_json(os.path.join(workdir, "eval", "report.json"))
    assert report["uniform"]["ensemble"]["top1_many"] is None
    assert "nan" not in open(os.path.join(workdir, "eval", "report.md")).read().lower()


# -- c. --help --------------------------------------------------------------------------------

def _scripts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return sorted(tomllib.load(f)["project"]["scripts"].items())


@pytest.mark.parametrize("name, target", _scripts())
def test_every_console_script_has_a_help_that_says_what_it_does(name, target):
    module, function = target.split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; {function}()"
    result = _run(["-c", code, "--help"], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    about, _, rest = text.partition("\nUsage:\n")
    assert about.startswith(f"{name}: ") and len(about.split()) >= 25, text
    usage = rest.split("\n\n")[0].splitlines()
    assert usage and all(line.strip().startswith(name) for line in usage), text
    flags_listed = text.split("\nFlags:\n", 1)[1]
    assert flags_listed.strip().startswith("--"), text
    if "--config:" in flags_listed:  # Tools that take a config: how config arguments work.
        assert ":<key>=<value>" in text and "tiny=1" in text and "--config.<field>" in text
    positional = {"ltx-predict": ["<image or folder>"],
                  "ltx-prepare": ["ltx-prepare cifar10 | cifar100", "ltx-prepare folders <root>",
                                  "ltx-prepare records"]}
    for needle in positional.get(name, []):
        assert any(needle in line for line in usage), (needle, usage)


# -- d. no leaked shared memory --------------------------------------------------------------

@pytest.mark.slow
def test_a_custom_run_with_worker_processes_leaks_no_shared_memory(custom_run):
    _, result = custom_run
    assert LEAK not in result.stderr, result.stderr[-3000:]


def test_an_iterator_alive_at_exit_frees_its_workers_shared_memory():
    """A run that stops by an exception (SIGTERM, divergence) keeps its iterator referenced to
    the end; grain's workers then leave prefetched batches in shared memory."""
    script = """
import numpy as np
from absl import flags
flags.FLAGS.mark_as_parsed()
from ltx.data import pipeline, splits

def main():
    images = np.zeros((64, 8, 8, 3), np.uint8)
    labels = np.arange(64) % 4
    split = splits.Split(splits.ArraySource(images, labels), np.arange(64), labels)
    dataset = pipeline.train_dataset(split, global_batch_size=8, seed=0, mean=(0.5,) * 3,
                                     std=(0.2,) * 3)
    iterator = pipeline.train_iterator(dataset, num_workers=1)
    for _ in range(3):
        next(iterator)
    return iterator

if __name__ == "__main__":
    KEPT = main()  # Alive at exit, as in a traceback.
    print("READ", flush=True)
"""
    result = _run(["-c", script], timeout=300)
    assert result.returncode == 0 and "READ" in result.stdout, result.stderr[-3000:]
    assert LEAK not in result.stderr, result.stderr[-3000:]


# -- e. a busy workdir is refused at once -----------------------------------------------------

@pytest.mark.slow
def test_a_busy_workdir_is_refused_before_any_setup_naming_the_holder(named_tree, tmp_path):
    workdir = str(tmp_path / "busy")
    with faults.WorkdirLock(workdir):
        start = time.perf_counter()
        result = _run(["-m", "ltx.train", f"--config={CUSTOM}:root={named_tree},tiny=1",
                       f"--workdir={workdir}"], timeout=120)
        seconds = time.perf_counter() - start
        # Data that does not exist: refused for the workdir before the config's data is read.
        missing = _run(["-m", "ltx.train", f"--config={CUSTOM}:root=/no/such/tree,tiny=1",
                        f"--workdir={workdir}"], timeout=120)
    for case in (result, missing):
        assert case.returncode == 2, case.stderr[-3000:]
        assert f"is being trained by process {os.getpid()}" in case.stderr, case.stderr[-3000:]
    assert seconds < 5, seconds
    assert sorted(os.listdir(workdir)) == [faults.LOCK_FILE]


def test_the_early_check_sees_a_stage_lock_and_writes_nothing(tmp_path):
    workdir = str(tmp_path / "run")
    faults.check_workdir_free(workdir)  # Missing: free, and still missing.
    assert not os.path.exists(workdir)
    with faults.WorkdirLock(os.path.join(workdir, "experts")):  # A multi-stage run's stage.
        with pytest.raises(faults.WorkdirBusy, match=f"process {os.getpid()}"):
            faults.check_workdir_free(workdir)
    faults.check_workdir_free(workdir)  # Free again.
    with faults.WorkdirLock(workdir):  # The check keeps no lock.
        pass


# -- f. the official CIFAR tarballs -----------------------------------------------------------

def _small_cifar(num_classes, per_class):
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(num_classes), per_class)
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    return {"train": (images, labels), "test": (images[:num_classes], labels[:num_classes])}


def test_the_binary_tarballs_sha256_are_those_tfds_downloads():
    spec = importlib.util.find_spec("tensorflow_datasets")
    assert spec is not None, "tensorflow-datasets is a dev dependency (pip install -e '.[dev]')"
    folder = os.path.join(os.path.dirname(spec.origin), "url_checksums")
    published = {}
    for name in ("cifar10.txt", "cifar100.txt"):
        for line in open(os.path.join(folder, name)):
            url, _, digest, *_ = line.split()
            published[url.rsplit("/", 1)[1]] = digest
    for tarball in ("cifar-10-binary.tar.gz", "cifar-100-binary.tar.gz"):
        assert cifar.OFFICIAL_SHA256[tarball] == published[tarball]
    assert set(cifar.OFFICIAL_SHA256) == {t for pair in cifar.TARBALLS.values() for t in pair}


def test_an_unofficial_tarball_is_refused_unless_accepted(tmp_path, monkeypatch):
    tarball = str(tmp_path / "cifar-10-python.tar.gz")
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cifar.write_tarball(tarball, "cifar10", _small_cifar(10, 2), class_names=names)
    digest = cifar._sha256(tarball)
    with pytest.raises(cifar.UnofficialTarballError) as err:
        cifar.prepare("cifar10", tarball, str(tmp_path / "data"), official_only=True)
    message = str(err.value)
    for needle in (digest, cifar.OFFICIAL_SHA256["cifar-10-python.tar.gz"],
                   cifar.OFFICIAL_SHA256["cifar-10-binary.tar.gz"], cifar.ACCEPT_FLAG):
        assert needle in message
    assert not os.path.exists(tmp_path / "data" / "cifar10")

    refused = _run(["-m", "ltx.cli", "prepare", "cifar10", f"--tarball={tarball}",
                    f"--data_dir={tmp_path / 'data'}"], timeout=120)
    assert refused.returncode == 2 and "--accept_unofficial_tarball" in refused.stderr
    assert not os.path.exists(tmp_path / "data" / "cifar10")
    accepted = _run(["-m", "ltx.cli", "prepare", "cifar10", f"--tarball={tarball}",
                     f"--data_dir={tmp_path / 'data'}", "--accept_unofficial_tarball"],
                    timeout=120)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "not an official CIFAR tarball" in accepted.stdout
    info = _strict_json(tmp_path / "data" / "cifar10" / "info.json")
    assert info["official"] is False and info["sha256"] == digest and info["classes"] == names
    config = load_config("cifar10_lt_balpoe", "ir=2")
    config.data.data_dir = str(tmp_path / "data")
    assert datasets.class_names(config.data) == names  # The tarball's names, for ltx-predict.

    # The published digest passes (here made the synthetic tarball's).
    monkeypatch.setitem(cifar.OFFICIAL_SHA256, "cifar-10-python.tar.gz", digest)
    cifar.prepare("cifar10", tarball, str(tmp_path / "data"), official_only=True)
    assert _strict_json(tmp_path / "data" / "cifar10" / "info.json")["official"] is True


@pytest.mark.parametrize("binary", [False, True])
def test_the_class_names_of_both_tarball_versions_are_read(binary, tmp_path):
    names = [f"class {i}" for i in range(100)]
    tarball = str(tmp_path / cifar.TARBALLS["cifar100"][int(binary)])
    cifar.write_tarball(tarball, "cifar100", _small_cifar(100, 1), binary=binary,
                        class_names=names)
    assert cifar.read_tarball(tarball, "cifar100")["classes"] == names
    cifar.write_tarball(tarball, "cifar100", _small_cifar(100, 1), binary=binary)
    assert cifar.read_tarball(tarball, "cifar100")["classes"] is None


# -- g. ltx-stats reads no data ---------------------------------------------------------------

@pytest.mark.slow
def test_stats_of_a_config_needs_no_data_location():
    config = os.path.join(CONFIG_DIR, "imagenet_lt_ce.py")
    result = _run(["-m", "ltx.cli", "stats", f"--config={config}"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads(result.stdout)
    assert stats["num_classes"] == 1000 and round(stats["params"] / 1e6, 2) == 25.56
    # Its other values are still checked.
    bad = _run(["-m", "ltx.cli", "stats", f"--config={config}", "--config.optimizer.lr=-1"],
               timeout=300)
    assert bad.returncode == 2 and "config.optimizer.lr=-1" in bad.stderr, bad.stderr[-3000:]
    assert "data.root" not in bad.stderr


# -- h. no silent loss of data to a long-tailed subset ---------------------------------------

def test_a_subset_that_empties_a_class_is_refused_naming_it_and_the_largest_ratio():
    counts = long_tail.long_tail_counts(10, 100, 100)
    with pytest.raises(ValueError) as err:
        long_tail.checked_subset(np.full(100, 10), counts, imbalance_ratio=100,
                                 class_names=[f"c{i}" for i in range(100)])
    message = str(err.value)
    assert "'c50' (50)" in message and "and 45 more" in message  # Classes 50..99 keep none.
    assert "at most 10" in message and "config.data.imbalance_ratio=100" in message
    assert "ir=1" not in message  # A balanced set: no "long-tailed already" advice.
    # The ratio it names keeps every class.
    assert long_tail.long_tail_counts(10, 100, 10).min() == 1
    # A class with no image at all is named as such.
    with pytest.raises(ValueError, match="has no image of class 2"):
        long_tail.checked_subset([5, 5, 0], [5, 3, 1], imbalance_ratio=5)


def test_the_warning_is_for_a_set_long_tailed_already_not_for_the_benchmarks(capsys):
    # CIFAR-100-LT at ratio 100 keeps 10,847 of 50,000 images of a balanced set: as asked.
    benchmark = long_tail.long_tail_counts(500, 100, 100)
    assert long_tail.checked_subset(np.full(100, 500), benchmark, imbalance_ratio=100) is None
    # digits-LT's pool is nearly balanced (134 to 143 images): no warning either, at any ratio.
    capsys.readouterr()
    assert digits.digits_lt(100.0).class_counts[0] == 134
    assert capsys.readouterr().err == ""
    available = np.array([30, 20, 12, 8, 5])
    counts = long_tail.long_tail_counts(5, 5, 2)
    message = long_tail.checked_subset(available, counts, imbalance_ratio=2)
    assert f"keeps {counts.sum()} of its 75 images" in message and "ir=1" in message


def test_custom_data_long_tailed_already(tmp_path, capsys):
    root = _tree(str(tmp_path / "lt"), [30, 20, 12, 8, 5][:4])
    with pytest.raises(ValueError) as err:
        datasets.build(load_config("custom_lt", f"root={root},ir=10").data)
    assert "'cat' (2)" in str(err.value) or "'dog' (3)" in str(err.value)
    assert "ir=1" in str(err.value) and "at most 8" in str(err.value)
    capsys.readouterr()
    built = datasets.build(load_config("custom_lt", f"root={root},ir=2").data)
    warning = capsys.readouterr().err
    assert warning.startswith("Warning: ") and f"keeps {len(built.train)} of its 70" in warning
    # The command line: a non-zero exit with the message.
    result = _run(["-m", "ltx.train", f"--config={CUSTOM}:root={root},ir=10,tiny=1",
                   f"--workdir={tmp_path / 'run'}"], timeout=300)
    assert result.returncode == 2 and "with no training image" in result.stderr
    assert "config.data.imbalance_ratio" in result.stderr


def test_cifar_with_classes_left_empty_is_refused():
    config = load_config("cifar100_lt_balpoe", "ir=100")
    config.data.source, config.data.tfds_data_dir = "tfds", TFDS_DATA
    with pytest.raises(ValueError) as err:  # 10 images per class in the fixture.
        datasets.build(config.data)
    assert "'fine_50' (50)" in str(err.value) and "at most 10" in str(err.value)
    with pytest.raises(ValueError, match="at most 134"):
        digits.digits_lt(1000.0)
