"""data.source='records': list files written as ArrayRecord shards of pre-resized images
(`ltx-prepare records`, ltx.data.records), read back image for image, checked at load."""

import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import load_config
from ltx import config_check
from ltx.data import datasets, image_lists, records

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
# (split, label, (width, height)) of the tree's images; classes 0-3 of ImageNet-LT's 1000.
IMAGES = [("train", 0, (300, 200)), ("train", 0, (120, 260)), ("train", 0, (64, 48)),
          ("train", 1, (280, 280)), ("train", 1, (90, 70)), ("train", 2, (400, 300)),
          ("val", 1, (100, 300)), ("val", 2, (50, 40)),
          ("test", 0, (270, 330)), ("test", 1, (60, 80)), ("test", 2, (300, 260)),
          ("test", 3, (500, 375))]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """ImageNet-LT-named lists (and a forward-2 test list) over JPEGs of several sizes."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    lines = {"train": [], "val": [], "test": []}
    for i, (split, label, (w, h)) in enumerate(IMAGES):
        (root / split).mkdir(exist_ok=True)
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(
            root / split / f"{i}.jpg", quality=90)
        lines[split].append(f"{split}/{i}.jpg {label}\n")
    for split, found in lines.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("".join(found))
    (root / "ImageNet_LT_forward2.txt").write_text("".join(lines["test"][:3]))
    out = root / "records"
    result = subprocess.run(
        [sys.executable, "-m", "ltx.cli", "prepare", "records", f"--root={root}",
         f"--list_dir={root}", f"--out={out}", "--shorter_side=96", "--workers=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ImageNet_LT_train.txt: 6 images in 1 shard(s)" in result.stdout
    return root


def _config(tree, source):
    config = load_config("imagenet_lt_balpoe", "arch=resnet10,epochs=1")
    with config.unlocked():
        config.data.root = str(tree)
        config.data.list_dir = str(tree)
        config.data.source = source
        config.data.records_dir = str(tree / "records")
        config.data.num_workers = 0
        config.data.augment.crop_size = 32
        config.data.augment.eval_resize = 36
        config.model.widths = (8, 8, 16, 16)
        config.batch_size = 4
        config.eval.batch_size = 4
        config.checkpoint.async_save = False
    return config


def test_records_hold_the_resized_images_in_list_order(tree):
    split = records.list_split(str(tree / "records"), str(tree / "ImageNet_LT_train.txt"),
                               1000)
    paths, labels, _ = image_lists.parse_list(str(tree / "ImageNet_LT_train.txt"), 1000)
    assert split.labels.tolist() == labels.tolist()
    for i, path in enumerate(paths):
        stored = split.source[i]["image"]
        expected = records.resized_jpeg(str(tree / path), 96, 95)
        with Image.open(io.BytesIO(expected)) as pil:
            np.testing.assert_array_equal(stored, np.asarray(pil.convert("RGB")))
        w, h = Image.open(tree / path).size
        if min(w, h) > 96:  # Shorter side resized to 96, the aspect ratio kept.
            assert min(stored.shape[:2]) == 96
            assert stored.shape[1] / stored.shape[0] == pytest.approx(w / h, rel=0.03)
        else:  # Smaller images keep their size.
            assert stored.shape[:2] == (h, w)
    # Picklable for grain's workers: reopened, the same records.
    again = pickle.loads(pickle.dumps(split.source))
    np.testing.assert_array_equal(again[2]["image"], split.source[2]["image"])


def test_parallel_writing_gives_the_same_shards(tree, tmp_path):
    list_path = str(tree / "ImageNet_LT_test.txt")
    one = records.write_list(list_path, str(tree), str(tmp_path / "a"), num_classes=1000,
                             shorter_side=96, records_per_shard=2)
    two = records.write_list(list_path, str(tree), str(tmp_path / "b"), num_classes=1000,
                             shorter_side=96, records_per_shard=2, workers=2)
    assert one == two and list(one["shards"].values()) == [2, 2]
    for name in one["shards"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_records_and_files_give_the_same_splits(tree):
    from_files = datasets.build(_config(tree, "files").data)
    from_records = datasets.build(_config(tree, "records").data)
    for split in ("train", "val", "test"):
        a, b = getattr(from_files, split), getattr(from_records, split)
        assert a.labels.tolist() == b.labels.tolist()
        # The eval view of a stored image is close to the original's (one more resize and
        # JPEG round).
        for i in range(len(a)):
            x = from_files.eval_transform(a.source[int(a.indices[i])]["image"]).astype(float)
            y = from_records.eval_transform(b.source[int(b.indices[i])]["image"]).astype(float)
            assert x.shape == y.shape == (32, 32, 3)
            assert np.abs(x - y).mean() < 12
    np.testing.assert_array_equal(from_files.class_counts, from_records.class_counts)


@pytest.mark.slow
def test_training_and_evaluation_read_the_records(tree, tmp_path):
    from ltx import report, trainer

    config = _config(tree, "records")
    with config.unlocked():
        config.data.root = ""  # Not needed: every split comes from the records.
    config_check.check(config)
    final, predictor = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(final["nll"]) and final["dataset"] == "imagenet_lt"
    evaluated = report.evaluate_workdir(str(tmp_path / "run"), predictor=predictor,
                                         pictures=False)
    assert list(evaluated["distributions"]) == ["forward-2"]
    assert evaluated["distributions"]["forward-2"]["num_images"] == 3


def test_a_changed_list_a_wrong_shard_and_missing_records_are_named(tree, tmp_path):
    out = tmp_path / "records"
    list_path = tmp_path / "ImageNet_LT_test.txt"
    list_path.write_text((tree / "ImageNet_LT_test.txt").read_text())
    index = records.write_list(str(list_path), str(tree), str(out), num_classes=1000,
                               shorter_side=96, records_per_shard=3)
    list_path.write_text(list_path.read_text().replace(" 3\n", " 2\n"))
    with pytest.raises(ValueError, match=r"(?s)ImageNet_LT_test.txt is not the list the records .* "
                                         r"were written from.*ltx-prepare records"):
        records.list_split(str(out), str(list_path), 1000)
    list_path.write_text((tree / "ImageNet_LT_test.txt").read_text())
    first, second = list(index["shards"])
    (out / first).write_bytes((out / second).read_bytes())  # 1 record where the index says 3.
    with pytest.raises(ValueError, match=rf"shard .*{first} holds 1 records, its index .* "
                                         "says 3"):
        records.list_split(str(out), str(list_path), 1000)
    with pytest.raises(FileNotFoundError, match=r"(?s)ImageNet_LT_val.json does not exist: no "
                                                r"records of .*ltx-prepare records"):
        records.list_split(str(out), str(tree / "ImageNet_LT_val.txt"), 1000)
    config = _config(tree, "records")
    with config.unlocked():
        config.data.records_dir = ""
    with pytest.raises(config_check.ConfigError, match="config.data.records_dir is empty"):
        config_check.check(config)
