"""digits-LT splits, the grain pipelines, Mixup, and CIFAR-LT over mock TFDS files."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

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


# -- CIFAR-LT over TFDS ---------------------------------------------------------------------

def _fake_prepared_layout(data_dir, name="cifar100"):
    folder = os.path.join(data_dir, name, "3.0.2")
    os.makedirs(folder)
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump({"name": name}, f)
    open(os.path.join(folder, f"{name}-train.array_record-00000-of-00001"), "w").close()


def test_missing_cifar_fails_at_once_with_instructions(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        cifar.cifar_lt("cifar100_lt", data_dir=str(tmp_path))
    message = str(err.value)
    assert "tfds build cifar100" in message and "--file_format=array_record" in message
    assert "downloads/manual" in message and "cifar-100-python.tar.gz" in message
    with pytest.raises(FileNotFoundError, match="data_dir is empty"):
        cifar.cifar_lt("cifar100_lt", data_dir="")


def test_tfrecord_only_preparation_is_rejected(tmp_path):
    folder = tmp_path / "cifar10" / "3.0.2"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    (folder / "cifar10-train.tfrecord-00000-of-00001").write_text("")
    with pytest.raises(FileNotFoundError, match="no array_record files"):
        cifar.cifar_lt("cifar10_lt", data_dir=str(tmp_path))


def _balanced_mock_source(num_examples, num_classes):
    def as_data_source_fn(builder, split, *args, **kwargs):
        n = num_examples if split == "train" else num_examples // 5
        rng = np.random.default_rng(0 if split == "train" else 1)
        labels = rng.permutation(np.arange(n) % num_classes)
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        return [{"image": images[i], "label": np.int64(labels[i]), "coarse_label": np.int64(0),
                 "id": f"{split}_{i}"} for i in range(n)]
    return as_data_source_fn


def test_cifar100_lt_over_mock_tfds_end_to_end(tmp_path):
    _fake_prepared_layout(str(tmp_path))
    # 100 images per class: the ratio-100 profile keeps int(100 * 0.01 ** (i / 99)) per class.
    with tfds.testing.mock_data(as_data_source_fn=_balanced_mock_source(10_000, 100)):
        d = cifar.cifar_lt("cifar100_lt", data_dir=str(tmp_path), imbalance_ratio=100)
    expected = np.array([int(100 * 0.01 ** (i / 99)) for i in range(100)])
    np.testing.assert_array_equal(d.class_counts, expected)
    assert len(d.train) == expected.sum() and len(d.test) == 2000 and d.val is None
    assert d.image_shape == (32, 32, 3) and d.num_classes == 100
    from ltx.data import augment
    ds = pipeline.train_dataset(d.train, global_batch_size=16, seed=0, mean=d.mean, std=d.std,
                                transform=augment.make_train_transform(rotation=15))
    batch = pipeline.train_iterator(ds).__next__()
    assert batch["image"].shape == (16, 32, 32, 3) and batch["label"].max() < 100
    assert set(d.train.source[0]) == {"image", "label"}  # TFDS extras are dropped.


def test_cifar100_lt_balpoe_config_trains_over_mock_tfds(tmp_path):
    from ltx import config_lib, trainer

    data_dir = str(tmp_path / "tfds")
    _fake_prepared_layout(data_dir)
    config_path = os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                               "cifar100_lt_balpoe.py")
    config = config_lib.load_config_file(config_path, "ir=100")
    config.data.data_dir = data_dir
    config.data.num_workers = 0  # The mock lives in this process only.
    config.num_epochs = 1
    config.schedule.decay_epochs = ()
    config.batch_size = 64
    config.model.widths = (4, 8, 16)
    config.model.blocks_per_stage = 1
    config.checkpoint.async_save = False
    with tfds.testing.mock_data(as_data_source_fn=_balanced_mock_source(10_000, 100)):
        run = trainer.Run(config, str(tmp_path / "run"))
        final = run.train()
    assert run.method.num_experts == 3 and len(run.dataset.train) == 2_131
    assert int(run.state.step) == 34  # ceil(2131 / 64)
    assert final["dataset"] == "cifar100_lt" and np.isfinite(final["nll"])
    assert 0.0 <= final["top1_all"] <= 100.0 and "val_top1_all" not in final
    assert os.path.exists(tmp_path / "run" / "final_metrics.json")


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
