"""data.source='tfds': datasets prepared by TFDS itself (tests/fixtures/tfds, written by
make_fixtures.py in an environment with TensorFlow), read here without TensorFlow."""

import hashlib
import importlib.util
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from ltx.data import cifar, datasets, tfds_source
from helpers import load_config

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tfds")
DATA_DIR = os.path.join(FIXTURES, "data")
LISTS = os.path.join(FIXTURES, "lists")


@pytest.fixture(autouse=True)
def index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "cache"))
    tfds_source._JOINERS.clear()
    return tmp_path / "cache"


def _hashes(split):
    """(sha256 of the image, label) of every record of `split`, in order."""
    return [(hashlib.sha256(split.source[int(i)]["image"].tobytes()).hexdigest(), int(label))
            for i, label in zip(split.indices, split.labels)]


def _tfds_data(config, **fields):
    with config.unlocked():
        config.data.source = "tfds"
        config.data.tfds_data_dir = DATA_DIR
        for key, value in fields.items():
            config.data[key] = value
    return config


def test_tensorflow_is_not_installed():
    # The TFDS tests below prove the train-time path needs no TensorFlow only if it is absent.
    assert importlib.util.find_spec("tensorflow") is None


def test_cifar100_lt_from_tfds_equals_the_tarball_path_image_for_image(tmp_path):
    arrays = np.load(os.path.join(FIXTURES, "cifar100_arrays.npz"))
    tarball = str(tmp_path / "cifar-100-binary.tar.gz")
    cifar.write_tarball(tarball, "cifar100", {
        "train": (arrays["train_images"], arrays["train_labels"]),
        "test": (arrays["test_images"], arrays["test_labels"])}, binary=True)
    cifar.prepare("cifar100", tarball, str(tmp_path / "data"))
    config = load_config("cifar100_lt_balpoe", "ir=10")
    with config.unlocked():
        config.data.data_dir = str(tmp_path / "data")
    from_tarball = datasets.build(config.data)
    from_tfds = datasets.build(_tfds_data(config).data)
    # 10 images per class in the fixture: ratio 10 keeps 10, 9, ..., 1 of them (ratio 100 would
    # leave classes empty, which is refused).
    assert len(from_tfds.train) == len(from_tarball.train) == 346
    for split in ("train", "test"):
        assert _hashes(getattr(from_tfds, split)) == _hashes(getattr(from_tarball, split))
    np.testing.assert_array_equal(from_tfds.class_counts, from_tarball.class_counts)
    assert from_tfds.val is None


def test_cifar_ids_out_of_place_are_refused(monkeypatch):
    real = tfds_source._data_source

    class Shifted:
        def __init__(self, source):
            self.source = source

        def __len__(self):
            return len(self.source)

        def __getitems__(self, indices):
            records = self.source.__getitems__(indices)
            return [{**r, "id": b"train_99999"} for r in records]

    monkeypatch.setattr(tfds_source, "_data_source", lambda b, s: Shifted(real(b, s)))
    with pytest.raises(ValueError, match=r"id 'train_99999' is not 'train_<position>'"):
        tfds_source.cifar_arrays("cifar100", DATA_DIR)


@pytest.mark.slow
def test_training_from_tfds_imports_no_tensorflow(tmp_path):
    script = f"""
import sys
sys.path.insert(0, "tests")
from absl import flags
flags.FLAGS.mark_as_parsed()  # grain reads its flags; ltx-train's main parses them.
from ltx import trainer
from helpers import load_config
config = load_config("cifar100_lt_balpoe", "ir=10,tiny=1")
with config.unlocked():
    config.num_epochs = 1
    config.schedule.warmup_epochs = 0
    config.schedule.decay_epochs = ()
    config.data.source = "tfds"
    config.data.tfds_data_dir = {DATA_DIR!r}
final, _ = trainer.train_and_evaluate(config, {str(tmp_path / 'run')!r})
assert final["dataset"] == "cifar100_lt", final
loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
print("TENSORFLOW_MODULES", loaded)
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, tfds_source.CACHE_ENV: str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TENSORFLOW_MODULES []" in result.stdout
    assert os.path.isfile(tmp_path / "run" / "final_metrics.json")


def _imagenet_config(tmp_path, **fields):
    config = load_config("imagenet_lt_balpoe", "arch=resnet10,epochs=1")
    config = _tfds_data(config, **fields)
    with config.unlocked():
        config.data.num_workers = 0
        config.data.augment.crop_size = 32  # Keeps the run fast; the transforms are tested
        config.data.augment.eval_resize = 36  # at 224 in test_image_lists.
        config.model.widths = (8, 8, 16, 16)
        config.batch_size = 16
        config.eval.batch_size = 16
        config.checkpoint.async_save = False
    return config


def test_imagenet_lt_splits_from_tfds_and_from_imagenet2012_joined_with_the_lists(tmp_path):
    direct = datasets.build(_imagenet_config(tmp_path).data)
    joined_lt = datasets.build(_imagenet_config(tmp_path, list_dir=LISTS).data)
    joined_2012 = datasets.build(
        _imagenet_config(tmp_path, list_dir=LISTS, tfds_name="imagenet2012").data)
    # The join keeps the lists' order and labels: imagenet_lt and imagenet2012 give the same
    # records; imagenet_lt's own splits hold the same images in TFDS's order.
    for split in ("train", "val", "test"):
        lines = open(os.path.join(LISTS, f"ImageNet_LT_{split}.txt")).read().split("\n")
        list_labels = [int(line.split()[1]) for line in lines if line]
        assert getattr(joined_lt, split).labels.tolist() == list_labels
        assert _hashes(getattr(joined_lt, split)) == _hashes(getattr(joined_2012, split))
        assert sorted(_hashes(getattr(direct, split))) == sorted(_hashes(getattr(joined_lt,
                                                                                 split)))
    np.testing.assert_array_equal(direct.class_counts, joined_lt.class_counts)
    assert direct.num_classes == 1000 and len(direct.train) == int(direct.class_counts.sum())
    # Decoded as list-file images are (RGB uint8 of the stored JPEG's size).
    image = direct.test.source[0]["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    # A source pickles for grain's worker processes and reads the same records after.
    source = pickle.loads(pickle.dumps(direct.train.source))
    np.testing.assert_array_equal(source[3]["image"], direct.train.source[3]["image"])


@pytest.mark.slow
def test_imagenet_lt_from_tfds_trains_evaluates_with_the_shifted_lists_and_predicts(tmp_path):
    from ltx import predict, report, trainer

    config = _imagenet_config(tmp_path, list_dir=LISTS)
    workdir = str(tmp_path / "run")
    final, run = trainer.train_and_evaluate(config, workdir)
    assert final["dataset"] == "imagenet_lt" and np.isfinite(final["nll"])
    evaluated = report.evaluate_workdir(workdir, predictor=run, pictures=False)
    assert list(evaluated["distributions"]) == ["forward-2", "uniform", "backward-2"]
    assert evaluated["distributions"]["uniform"]["num_images"] == 40
    assert evaluated["meta"]["shifted_test_lists"] == LISTS
    predictor = predict.Predictor.from_workdir(workdir)
    images = [run.dataset.test.source[i]["image"] for i in range(3)]
    probs = predictor.predict_proba(images)
    assert probs.shape == (3, 1000)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-5)


def test_index_is_cached_per_version_and_split_and_reread_when_stale(index_cache):
    first = tfds_source.split_index("imagenet_lt", DATA_DIR, "train")
    cache = index_cache / "tfds_index" / "imagenet_lt" / "1.0.0" / "train.npz"
    assert cache.is_file()
    assert first["name"][0].endswith(".JPEG") and first["label"].dtype == np.int64
    np.savez(cache, label=first["label"][:5], name=first["name"][:5])  # Stale: wrong count.
    again = tfds_source.split_index("imagenet_lt", DATA_DIR, "train")
    np.testing.assert_array_equal(again["label"], first["label"])
    np.testing.assert_array_equal(again["name"], first["name"])


def test_missing_dataset_wrong_version_and_unmatched_list_lines_are_named(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"'cifar10' is not prepared .*tfds build cifar10 "
                             r"--file_format=array_record --data_dir="):
        tfds_source.cifar_arrays("cifar10", DATA_DIR)
    with pytest.raises(FileNotFoundError, match=r"version\(s\) \['3.0.2'\].*not the 9.9.9"):
        tfds_source.builder("cifar100:9.9.9", DATA_DIR)
    bad = tmp_path / "ImageNet_LT_test.txt"
    bad.write_text("val/n01440764/ILSVRC2012_val_00000001.JPEG 65\n"
                   "val/n01440764/ILSVRC2012_val_00099999.JPEG 0\n")
    with pytest.raises(ValueError, match=r"ImageNet_LT_test.txt:2: .*ILSVRC2012_val_00099999"
                                         r".JPEG' has no record in TFDS dataset"):
        tfds_source.list_split("imagenet_lt", DATA_DIR, str(bad), 1000)


def test_config_check_names_a_missing_tfds_data_dir(tmp_path):
    from ltx import config_check

    config = load_config("cifar100_lt_balpoe")
    _tfds_data(config, tfds_data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="config.data.tfds_data_dir="):
        config_check.check(config)


@pytest.mark.parametrize("tfds_name, path, key", [
    ("imagenet2012", "train/n01440764/n01440764_10026.JPEG", "n01440764_10026.JPEG"),
    ("i_naturalist2018", "train_val2018/Plantae/7477/3b60c9486db1d2ee875f11a669fbde4a.jpg",
     "3b60c9486db1d2ee875f11a669fbde4a"),
    ("places365_small", "data_256/a/airfield/00000001.jpg", "a/airfield/00000001.jpg"),
    ("places365_small", "/a/airfield/00000001.jpg", "a/airfield/00000001.jpg"),
    ("places365_small", "val_256/Places365_val_00000001.jpg", "Places365_val_00000001.jpg"),
])
def test_join_keys_match_the_tfds_file_name_features(tfds_name, path, key):
    assert tfds_source.join_key(tfds_name, path) == key
