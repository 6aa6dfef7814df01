"""Custom datasets: a folder-per-class tree made in the test, its list files (`ltx-prepare
folders`), the long-tailed subset of a balanced set, and the documented config training and
evaluating on it."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import load_config
from ltx import trainer
from ltx.data import datasets, image_lists

CLASSES = ("ant", "bee", "cat", "dog")
PER_SPLIT = {"train": 10, "val": 2, "test": 3}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """<root>/{train,val,test}/<class>/<i>.png: 12x12 images, one colour per class plus noise."""
    root = tmp_path_factory.mktemp("my_set")
    rng = np.random.default_rng(0)
    for split, count in PER_SPLIT.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                colour = np.array([60 * label, 255 - 60 * label, 40 + 50 * (label % 2)])
                pixels = np.clip(colour + rng.normal(0, 20, (12, 12, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")  # Skipped.
    return str(root)


def test_prepare_folders_writes_the_lists_and_the_class_names(tree):
    result = subprocess.run([sys.executable, "-m", "ltx.cli", "prepare", "folders", tree],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 classes; train 40 images" in result.stdout and "val 8, test 12" in result.stdout
    assert open(os.path.join(tree, "classes.txt")).read().split() == list(CLASSES)
    lines = open(os.path.join(tree, "train.txt")).read().splitlines()
    assert len(lines) == 40 and lines[0] == "train/ant/000.png 0"
    assert lines[-1] == "train/dog/009.png 3"
    assert len(open(os.path.join(tree, "test.txt")).read().splitlines()) == 12


def test_a_long_tailed_subset_of_the_balanced_tree(tree):
    image_lists.write_folder_lists(tree)
    config = load_config("custom_lt", f"root={tree},ir=5")
    assert datasets.spec(config.data)[0] == 4  # From classes.txt.
    d = datasets.build(config.data)
    # The CIFAR-LT profile from the smallest class (10): int(10 * 5 ** (-i / 3)).
    expected = [int(10 * 0.2 ** (i / 3)) for i in range(4)]
    np.testing.assert_array_equal(d.class_counts, expected)
    assert expected == [10, 5, 3, 2]
    assert len(d.train) == 20 and len(d.val) == 8 and len(d.test) == 12
    labels = d.train.source.labels[d.train.indices]
    np.testing.assert_array_equal(labels, d.train.labels)
    assert len(set(d.train.indices.tolist())) == 20  # Distinct images.


def test_the_number_of_classes_comes_from_the_training_list_without_classes_txt(tmp_path, tree):
    image_lists.write_folder_lists(tree, str(tmp_path))
    os.remove(tmp_path / "classes.txt")
    config = load_config("custom_lt", f"root={tree}")
    config.data.list_dir = str(tmp_path)
    assert datasets.spec(config.data)[0] == 4  # Largest label + 1.


@pytest.mark.slow
def test_the_custom_config_trains_and_evaluates(tree, tmp_path):
    from ltx import report

    image_lists.write_folder_lists(tree)
    config = load_config("custom_lt", f"root={tree},ir=5,tiny=1")
    config.data.num_workers = 0  # grain's worker processes read absl flags; pytest parses none.
    config.batch_size = 8
    config.eval.batch_size = 4
    workdir = str(tmp_path / "run")
    final, _ = trainer.train_and_evaluate(config, workdir)
    assert final["dataset"] == "list_files" and "val_top1_all" in final
    assert np.isfinite(final["nll"]) and 0.0 <= final["top1_all"] <= 100.0
    out = report.evaluate_workdir(workdir, pictures=False)
    assert os.path.isfile(os.path.join(workdir, "eval", "report.json"))
    # ltx-eval's uniform test numbers are the run's final test numbers.
    assert out["uniform"]["ensemble"]["top1_all"] == pytest.approx(final["top1_all"])
    assert out["uniform"]["ensemble"]["nll"] == pytest.approx(final["nll"], rel=1e-5)
    assert {"forward-2", "uniform", "backward-2"} <= set(out["distributions"])
    assert out["meta"]["shifted_test_lists"] is None  # Cut from the test split.

    # Lists of its own, named test_<kind><factor>.txt beside test.txt, are used instead.
    lines = open(os.path.join(tree, "test.txt")).read().splitlines()
    forward = [line for line in lines if line.endswith((" 0", " 1"))]
    try:
        with open(os.path.join(tree, "test_forward2.txt"), "w") as f:
            f.write("\n".join(forward) + "\n")
        out = report.evaluate_workdir(workdir, pictures=False)
    finally:
        os.remove(os.path.join(tree, "test_forward2.txt"))
    assert set(out["distributions"]) == {"forward-2"}
    assert out["distributions"]["forward-2"]["num_images"] == len(forward) == 6
    assert out["meta"]["shifted_test_lists"] == tree


@pytest.mark.parametrize("damage, message", [
    (lambda root: os.rename(os.path.join(root, "train"), os.path.join(root, "training")),
     "train does not exist"),
    (lambda root: os.makedirs(os.path.join(root, "test", "yak")), "is a class that train/"),
    (lambda root: os.makedirs(os.path.join(root, "train", "yak")), "holds no image"),
])
def test_a_malformed_tree_is_named(damage, message, tree, tmp_path):
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(tree, copy)
    damage(copy)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        image_lists.write_folder_lists(copy)
