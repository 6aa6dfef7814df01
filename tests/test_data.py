"""digits-LT splits, the grain pipelines, Mixup, and CIFAR-LT prepared from CIFAR tarballs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx.data import cifar, digits, mixup, pipeline, shots, splits


@pytest.fixture(scope="module")
def digits_dataset():
    return digits.digits_lt()


def test_digits_lt_default_counts_and_groups(digits_dataset):
    d = digits_dataset
    np.testing.assert_array_equal(d.class_counts, [134, 103, 80, 62, 48, 37, 28, 22, 17, 13])
    assert len(d.train) == 544 and len(d.val) == 100 and len(d.test) == 300
    np.testing.assert_array_equal(np.bincount(d.train.labels, minlength=10), d.class_counts)
    np.testing.assert_array_equal(np.bincount(d.test.labels), np.full(10, 30))
    np.testing.assert_array_equal(np.bincount(d.val.labels), np.full(10, 10))
    groups = shots.shot_groups(d.class_counts)
    assert [(groups == g).sum() for g in range(3)] == [2, 6, 2]  # All three groups non-empty.


def test_digits_lt_splits_are_disjoint_and_fixed(digits_dataset):
    d = digits_dataset
    train, val, test = (set(s.indices.tolist()) for s in (d.train, d.val, d.test))
    assert not (train & val) and not (train & test) and not (val & test)
    again = digits.digits_lt()
    np.testing.assert_array_equal(again.train.indices, d.train.indices)
    np.testing.assert_array_equal(again.test.indices, d.test.indices)
    record = d.train.source[int(d.train.indices[0])]
    assert record["image"].shape == (8, 8, 1) and record["image"].dtype == np.uint8
    assert record["label"] == d.train.labels[0]


@pytest.mark.parametrize("csv", [None, ("no", "such.csv.gz")], ids=["file", "loader"])
def test_digits_are_scikit_learns_whether_read_from_its_file_or_its_loader(csv, monkeypatch):
    from sklearn.datasets import load_digits
    if csv is not None:
        monkeypatch.setattr(digits, "_CSV", csv)
    images, labels = digits._load_digits()
    bunch = load_digits()
    np.testing.assert_array_equal(images[..., 0], np.round(bunch.images * 255.0 / 16.0))
    np.testing.assert_array_equal(labels, bunch.target)
    assert images.dtype == np.uint8 and labels.dtype == np.int64 and images.shape[-1] == 1


def test_digits_lt_rejects_a_head_larger_than_the_data():
    with pytest.raises(ValueError, match="max_per_class=150 exceeds the 134"):
        digits.digits_lt(max_per_class=150)


def _train_ds(d, seed=1, sharding=pipeline.Sharding(), batch=32):
    return pipeline.train_dataset(d.train, global_batch_size=batch, seed=seed, mean=d.mean,
                                  std=d.std, sharding=sharding,
                                  transform=lambda x, rng: np.roll(x, rng.integers(3), 0))


def test_train_stream_is_deterministic_and_resumable(digits_dataset):
    d = digits_dataset
    it = pipeline.train_iterator(_train_ds(d))
    batches = [next(it) for _ in range(6)]
    state = it.get_state()
    following = next(it)
    resumed = pipeline.train_iterator(_train_ds(d))
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["image"], following["image"])
    again = pipeline.train_iterator(_train_ds(d))
    np.testing.assert_array_equal(next(again)["image"], batches[0]["image"])
    other_seed = pipeline.train_iterator(_train_ds(d, seed=2))
    assert not np.array_equal(next(other_seed)["label"], batches[0]["label"])
    assert batches[0]["image"].dtype == np.float32 and batches[0]["label"].dtype == np.int32


def test_train_stream_visits_every_image_once_per_epoch(digits_dataset):
    d = digits_dataset
    ds = _train_ds(d, batch=17)  # 544 = 32 batches of 17: one epoch exactly.
    labels = np.concatenate([ds[i]["label"] for i in range(32)])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), d.class_counts)


def test_epochs_count_steps_as_the_official_loaders():
    # CIFAR-100-LT at imbalance ratio 100: 10,847 images in batches of 128.
    pad = pipeline.Epochs(10_847, 128)
    assert pad.steps_per_epoch == 85 and pad.total_steps(200) == 17_000
    assert pad.batch(84) == (84 * 128, 95)  # The last batch of epoch 0: 10,847 - 84 * 128.
    assert pad.batch(85) == (10_847, 128)  # Epoch 1 starts at its own permutation.
    assert pad.batch(2 * 85 + 3) == (2 * 10_847 + 3 * 128, 128)
    drop = pipeline.Epochs(10_847, 128, "drop")
    assert drop.steps_per_epoch == 84 and drop.batch(84) == (10_847, 128)
    stream = pipeline.Epochs(10_847, 128, "stream")
    assert stream.steps_per_epoch == 10_847 / 128 and stream.total_steps(200) == 16_949
    assert stream.batch(85) == (85 * 128, 128)
    with pytest.raises(ValueError, match="data.last_batch='smaller'; expected one of"):
        pipeline.Epochs(10, 4, "smaller")
    with pytest.raises(ValueError, match="'drop' with 10 training images and batch_size=16"):
        pipeline.Epochs(10, 16, "drop")


def test_every_epoch_is_one_pass_with_a_smaller_masked_last_batch(digits_dataset):
    d = digits_dataset
    ds = _train_ds(d, batch=128)  # 544 = 4 x 128 + 32: five steps per epoch.
    for epoch in range(2):
        batches = [ds[epoch * 5 + j] for j in range(5)]
        assert [int(b["mask"].sum()) for b in batches] == [128, 128, 128, 128, 32]
        assert all(b["image"].shape == (128, 8, 8, 1) for b in batches)
        labels = np.concatenate([b["label"][b["mask"]] for b in batches])
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), d.class_counts)
        last = batches[-1]
        assert last["mask"][:32].all()  # Real rows first; padding repeats them.
        np.testing.assert_array_equal(last["image"][32:64], last["image"][:32])
    first_epoch = np.concatenate([ds[j]["label"] for j in range(4)])
    second_epoch = np.concatenate([ds[5 + j]["label"] for j in range(4)])
    assert not np.array_equal(first_epoch, second_epoch)  # A fresh permutation.
    dropped = pipeline.train_dataset(d.train, global_batch_size=128, seed=1, mean=d.mean,
                                     std=d.std, last_batch="drop")
    assert dropped[4]["mask"].all()
    np.testing.assert_array_equal(dropped[4]["label"], ds[5]["label"])  # Epoch 1, batch 0.
    streamed = pipeline.train_dataset(d.train, global_batch_size=128, seed=1, mean=d.mean,
                                      std=d.std, last_batch="stream")
    assert "mask" not in streamed[4]
    np.testing.assert_array_equal(streamed[4]["label"][:32], ds[4]["label"][:32])
    np.testing.assert_array_equal(streamed[4]["label"][32:], ds[5]["label"][:96])


def test_stream_resumes_mid_epoch_after_a_padded_batch(digits_dataset):
    d = digits_dataset
    it = pipeline.train_iterator(_train_ds(d, batch=100))  # Six steps per epoch, last 44.
    for _ in range(7):
        next(it)
    state = it.get_state()
    following = [next(it) for _ in range(3)]
    resumed = pipeline.train_iterator(_train_ds(d, batch=100))
    resumed.set_state(state)
    for expected in following:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["mask"], expected["mask"])


def test_processes_read_disjoint_halves_of_the_global_batch(digits_dataset):
    d = digits_dataset
    whole = pipeline.train_dataset(d.train, global_batch_size=128, seed=1, mean=d.mean,
                                   std=d.std)
    halves = [pipeline.train_dataset(d.train, global_batch_size=128, seed=1, mean=d.mean,
                                     std=d.std, sharding=pipeline.Sharding(p, 2))
              for p in range(2)]
    assert halves[0][0]["image"].shape[0] == 64
    for step in (0, 4):  # A full batch, then the last batch of the epoch (32 real rows).
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(
                np.concatenate([h[step][key] for h in halves]), whole[step][key])
    assert halves[1][4]["mask"].sum() == 0  # Process 1 holds only padding in that step.
    with pytest.raises(ValueError, match="33 is not divisible by the 2 processes"):
        pipeline.train_dataset(d.train, global_batch_size=33, seed=1, mean=d.mean, std=d.std,
                               sharding=pipeline.Sharding(0, 2))


def test_eval_batches_cover_the_split_once_with_padding(digits_dataset):
    d = digits_dataset
    seen = []
    for p in range(2):
        for batch in pipeline.eval_batches(d.test, global_batch_size=128, mean=d.mean,
                                           std=d.std, sharding=pipeline.Sharding(p, 2)):
            assert batch["image"].shape[0] == 64
            assert (batch["index"][~batch["mask"]] == -1).all()
            np.testing.assert_array_equal(batch["label"][batch["mask"]],
                                          d.test.labels[batch["index"][batch["mask"]]])
            seen.extend(batch["index"][batch["mask"]].tolist())
    assert sorted(seen) == list(range(300))


def test_mixup_mixes_images_and_losses_with_one_coefficient():
    rng = jax.random.key(0)
    images = jnp.arange(4 * 2 * 2 * 1, dtype=jnp.float32).reshape(4, 2, 2, 1)
    labels = jnp.arange(4)
    mixed, ya, yb, lam = mixup.mixup(rng, images, labels, alpha=0.4)
    perm = np.asarray(yb)  # labels are 0..3, so the permuted labels are the permutation.
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[perm], rtol=1e-6)
    assert 0 <= float(lam) <= 1
    again = mixup.mixup(rng, images, labels, alpha=0.4)
    np.testing.assert_array_equal(again[0], mixed)
    loss = mixup.mixup_loss(lambda y: jnp.sum(y).astype(jnp.float32), ya, yb, lam)
    np.testing.assert_allclose(loss, 6.0, rtol=1e-6)  # Both label sets sum to 6.
    with pytest.raises(ValueError, match="alpha=0"):
        mixup.mixup(rng, images, labels, alpha=0.0)


def test_mixup_coefficients_follow_beta_alpha_alpha():
    lams = jax.vmap(lambda k: mixup.mixup(k, jnp.zeros((2, 1, 1, 1)), jnp.zeros(2, int),
                                          alpha=0.4)[3])(jax.random.split(jax.random.key(1),
                                                                          4000))
    # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.1389.
    assert abs(float(lams.mean()) - 0.5) < 0.02
    assert abs(float(lams.var()) - 0.25 / 1.8) < 0.01


# -- CIFAR-LT from the official tarballs ------------------------------------------------------

def _synthetic_cifar(num_classes, train_per_class, test_per_class, seed=0):
    """Random images in the tarball's role: labels in a shuffled (not class-sorted) order, as
    in the real batches."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)
        images = rng.integers(0, 256, (labels.size, 32, 32, 3), dtype=np.uint8)
        data[split] = (images, labels)
    return data


def _reference_imbalanced_subset(labels, num_classes, imb_factor, rand_number=0):
    """IMBALANCECIFAR's selection as the references write it (LDAM-DRW's imbalance_cifar.py,
    reused by RIDE, SADE and BalPoE): exponential counts, np.random.seed, shuffle each class's
    indices, keep the first n, classes in order."""
    img_max = len(labels) / num_classes
    counts = [int(img_max * (imb_factor ** (i / (num_classes - 1.0))))
              for i in range(num_classes)]
    np.random.seed(rand_number)
    kept = []
    for the_class, n in zip(np.unique(labels), counts):
        idx = np.where(labels == the_class)[0]
        np.random.shuffle(idx)
        kept.append(idx[:n])
    return np.concatenate(kept), np.array(counts)


@pytest.mark.parametrize("name, binary", [("cifar100", False), ("cifar100", True),
                                          ("cifar10", False), ("cifar10", True)])
def test_prepare_reads_both_tarball_versions_in_the_tarball_order(name, binary, tmp_path):
    classes = 100 if name == "cifar100" else 10
    data = _synthetic_cifar(classes, 3, 1)
    tarball = str(tmp_path / cifar.TARBALLS[name][int(binary)])
    cifar.write_tarball(tarball, name, data, binary=binary)
    folder = cifar.prepare(name, tarball=tarball, data_dir=str(tmp_path / "data"))
    assert folder == str(tmp_path / "data" / name)
    assert sorted(os.listdir(folder)) == sorted(cifar.FILES)  # No staging folder left.
    prepared = cifar.load_prepared(name, str(tmp_path / "data"))
    for split in ("train", "test"):
        np.testing.assert_array_equal(prepared[split][0], data[split][0])
        np.testing.assert_array_equal(prepared[split][1], data[split][1])
    info = json.load(open(os.path.join(folder, "info.json")))
    assert info["counts"] == {"train": 3 * classes, "test": classes}


def test_the_pixel_layout_is_the_official_one(tmp_path):
    """A record's 3,072 bytes are the 1,024 red values row by row, then green, then blue."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 1, 0] = 7    # red, row 0, column 1: byte 1
    image[0, 1, 0, 1] = 9    # green, row 1, column 0: byte 1024 + 32
    image[0, 31, 31, 2] = 11  # blue, last pixel: byte 3071
    data = {"train": (image, np.array([4])), "test": (image, np.array([2]))}
    path = str(tmp_path / "cifar-10-binary.tar.gz")
    cifar.write_tarball(path, "cifar10", data, binary=True)
    import tarfile
    with tarfile.open(path) as tar:
        raw = tar.extractfile("cifar-10-batches-bin/test_batch.bin").read()
    assert len(raw) == 3073 and raw[0] == 2
    assert raw[1 + 1] == 7 and raw[1 + 1024 + 32] == 9 and raw[1 + 3071] == 11


def test_the_long_tailed_subset_is_the_references_one(tmp_path):
    data = _synthetic_cifar(100, 20, 2, seed=3)
    tarball = str(tmp_path / "cifar-100-python.tar.gz")
    cifar.write_tarball(tarball, "cifar100", data)
    cifar.prepare("cifar100", tarball=tarball, data_dir=str(tmp_path))
    d = cifar.cifar_lt("cifar100_lt", data_dir=str(tmp_path), imbalance_ratio=10)
    indices, counts = _reference_imbalanced_subset(data["train"][1], 100, 0.1)
    np.testing.assert_array_equal(d.class_counts, counts)
    np.testing.assert_array_equal(d.train.indices, indices)  # The same images, same order.
    np.testing.assert_array_equal(d.train.source[int(indices[5])]["image"],
                                  data["train"][0][indices[5]])
    assert len(d.test) == 200 and d.val is None and d.num_classes == 100


def test_a_missing_or_wrong_tarball_fails_at_once_with_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv(cifar.DATA_DIR_ENV, str(tmp_path / "default"))
    with pytest.raises(FileNotFoundError) as err:
        cifar.cifar_lt("cifar100_lt", data_dir="")
    message = str(err.value)
    assert str(tmp_path / "default" / "cifar100") in message
    assert "ltx-prepare cifar100 --tarball=" in message and "cifar-100-python.tar.gz" in message
    with pytest.raises(FileNotFoundError, match="download it from https://"):
        cifar.prepare("cifar100")  # Nothing to find: no network, no retry.
    other = str(tmp_path / "cifar-100-python.tar.gz")
    cifar.write_tarball(other, "cifar10", _synthetic_cifar(10, 1, 1))
    with pytest.raises(ValueError, match="is not a cifar100 tarball"):
        cifar.prepare("cifar100", tarball=other)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="not a readable tarball"):
        cifar.prepare("cifar100", tarball=str(tmp_path / "junk.tar.gz"))
    assert not (tmp_path / "default" / "cifar100").exists()


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    import io
    import pickle
    import tarfile

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    payload = pickle.dumps({b"data": Evil(), b"fine_labels": []})
    path = str(tmp_path / "cifar-100-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for member in ("cifar-100-python/train", "cifar-100-python/test"):
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        cifar.read_tarball(path, "cifar100")


@pytest.mark.slow
def test_cifar100_lt_trains_and_evaluates_from_a_prepared_tarball_offline(tmp_path):
    """The README's CIFAR path end to end, with a small synthetic tarball: ltx-prepare (the
    console command), then the CIFAR-100-LT BalPoE config for one epoch and its evaluation."""
    import subprocess
    import sys

    from ltx import config_lib, trainer

    tarball = str(tmp_path / "cifar-100-python.tar.gz")
    cifar.write_tarball(tarball, "cifar100", _synthetic_cifar(100, 10, 2, seed=1))
    data_dir = str(tmp_path / "data")
    result = subprocess.run([sys.executable, "-m", "ltx.cli", "prepare", "cifar100",
                             f"--tarball={tarball}", f"--data_dir={data_dir}",
                             "--accept_unofficial_tarball"],  # A synthetic tarball.
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1000 train and 200 test images" in result.stdout

    config_path = os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                               "cifar100_lt_balpoe.py")
    config = config_lib.load_config_file(config_path, "ir=10")
    config.data.data_dir = data_dir
    config.data.num_workers = 0  # grain's worker processes read absl flags; pytest parses none.
    config.num_epochs = 1
    config.schedule.decay_epochs = ()
    config.batch_size = 64
    config.model.widths = (4, 8, 16)
    config.model.blocks_per_stage = 1
    config.checkpoint.async_save = False
    final, run = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    # ratio 10 over 10 images per class: int(10 * 0.1 ** (i / 99)) per class.
    expected = sum(int(10 * 0.1 ** (i / 99)) for i in range(100))
    assert run.method.num_experts == 3 and len(run.dataset.train) == expected
    assert final["dataset"] == "cifar100_lt" and np.isfinite(final["nll"])
    assert 0.0 <= final["top1_all"] <= 100.0 and "val_top1_all" not in final


def test_counts_from_labels_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="label 10 out of range"):
        splits.counts_from_labels(np.array([1, 10]), 10)


def test_class_balanced_sampler_draws_classes_uniformly_and_is_deterministic(digits_dataset):
    d = digits_dataset
    make = lambda: pipeline.train_dataset(d.train, global_batch_size=500, seed=3,  # noqa: E731
                                          mean=d.mean, std=d.std, sampler="class_balanced")
    first = np.concatenate([make()[k]["label"][make()[k]["mask"]] for k in range(8)])
    again = np.concatenate([make()[k]["label"][make()[k]["mask"]] for k in range(8)])
    np.testing.assert_array_equal(first, again)
    freq = np.bincount(first, minlength=10) / first.size
    # Uniform over the 10 classes (2176 draws: std of a frequency ~0.0065), whereas the shuffled
    # stream gives the head class 134/544 = 0.25 and the tail 13/544 = 0.024.
    assert np.abs(freq - 0.1).max() < 0.025
    with pytest.raises(ValueError, match="data.sampler='balanced'; expected"):
        pipeline.train_dataset(d.train, global_batch_size=8, seed=0, mean=d.mean, std=d.std,
                               sampler="balanced")


def test_threaded_eval_decoding_keeps_the_order_and_values(digits_dataset):
    d = digits_dataset
    kwargs = dict(global_batch_size=64, mean=d.mean, std=d.std,
                  transform=lambda image: image[::-1].copy())
    serial = list(pipeline.eval_batches(d.test, threads=1, **kwargs))
    threaded = list(pipeline.eval_batches(d.test, threads=3, **kwargs))
    assert len(serial) == len(threaded) == 5
    for a, b in zip(serial, threaded):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_automatic_workers_leave_one_core_to_the_main_process():
    cores = len(os.sched_getaffinity(0))
    assert pipeline.resolve_num_workers(pipeline.AUTO_WORKERS) == max(0, min(16, cores - 1))
    assert pipeline.resolve_num_workers(3) == 3
