"""Augmentation on device (ltx.data.device_augment, data.augment.on_device): the same outputs as
the host path for the same random parameters, the same distribution of draws, epochs like the
host path's. The trainer's invariances with it (4 devices = 1, resume = uninterrupted) are in
tests/test_trainer.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ScriptedRng, load_config, tiny_config

from ltx import checkpointing, config_check
from ltx.data import augment, device_augment, digits, pipeline


@pytest.mark.parametrize("padding,shape", [(4, (32, 32, 3)), (1, (8, 8, 1)), (0, (5, 7, 3))])
def test_crop_and_flip_equal_the_host_transforms_for_the_same_parameters(padding, shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16,) + shape, dtype=np.uint8)
    offsets, flips = device_augment.draw_crop_flip(jax.random.key(3), 16, padding=padding,
                                                   flip=True)
    out = np.asarray(jax.jit(device_augment.crop_flip, static_argnames="padding")(
        jnp.asarray(images), offsets, flips, padding=padding))
    offsets, flips = np.asarray(offsets), np.asarray(flips)
    assert 0 < flips.sum() < 16
    for b in range(16):
        scripted = ScriptedRng(np.asarray(offsets[b]), [0.0 if flips[b] else 0.99])
        expected = augment.random_flip(augment.random_crop(images[b], scripted, padding=padding),
                                       scripted)
        np.testing.assert_array_equal(out[b], expected)
    mean, std = (0.5, 0.4, 0.3)[:shape[-1]], (0.2, 0.25, 0.3)[:shape[-1]]
    np.testing.assert_allclose(np.asarray(device_augment.normalize(jnp.asarray(images), mean,
                                                                   std)),
                               augment.normalize(images, mean, std), rtol=1e-6, atol=1e-6)


def _recovered(outputs, padding):
    """(top, left, flipped) of each crop of the marker image: 255 at (3, 3), 128 at (3, 4)."""
    found = []
    for image in outputs:
        rows, cols = np.nonzero(image[..., 0] == 255)
        other = np.nonzero(image[..., 0] == 128)[1]
        flipped = bool(other[0] < cols[0])
        col = 7 - cols[0] if flipped else cols[0]
        found.append((3 + padding - rows[0], 3 + padding - col, flipped))
    return np.array(found)


def test_host_and_device_draw_the_same_distribution_of_crops_and_flips():
    padding, draws = 1, 4000
    marker = np.zeros((8, 8, 1), np.uint8)
    marker[3, 3], marker[3, 4] = 255, 128
    host_rng = np.random.default_rng(0)
    transform = augment.make_train_transform(crop_padding=padding, flip=True)
    host = _recovered([transform(marker, host_rng) for _ in range(draws)], padding)
    batch_augment = device_augment.make_batch_augment(
        {"kind": "cifar", "crop_padding": padding, "flip": True}, mean=(0.0,), std=(1 / 255,))
    device_out = np.asarray(jax.jit(batch_augment)(
        jax.random.key(0), jnp.asarray(np.repeat(marker[None], draws, 0))))
    device = _recovered(np.rint(device_out).astype(np.int64), padding)
    for column in range(2):
        for value in range(2 * padding + 1):  # Each offset has probability 1/3.
            for sample in (host, device):
                assert abs(np.mean(sample[:, column] == value) - 1 / 3) < 0.03
    for sample in (host, device):
        assert abs(np.mean(sample[:, 2]) - 0.5) < 0.03


@pytest.mark.parametrize("last_batch", ["pad", "stream"])
def test_index_epochs_are_permutations_padded_and_sharded_like_the_host_epochs(last_batch):
    d = digits.digits_lt(10.0)
    num, batch = len(d.train), 64
    kwargs = dict(global_batch_size=batch, seed=5, last_batch=last_batch)
    whole = pipeline.train_index_dataset(d.train, **kwargs)
    host = pipeline.train_dataset(d.train, mean=d.mean, std=d.std, **kwargs)
    epochs = pipeline.Epochs(num, batch, last_batch)
    steps = int(np.ceil(epochs.steps_per_epoch * 2))
    seen = []
    for k in range(steps):
        element = whole[k]
        np.testing.assert_array_equal(element["label"], d.train.labels[element["index"]])
        if last_batch == "pad":  # The same rows are real as on the host path.
            np.testing.assert_array_equal(element["mask"], host[k]["mask"])
            seen.append(element["index"][element["mask"]])
        else:
            assert "mask" not in element
            seen.append(element["index"])
        halves = [pipeline.train_index_dataset(d.train, sharding=pipeline.Sharding(p, 2),
                                               **kwargs)[k] for p in range(2)]
        for key in element:
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]),
                                          element[key])
    stream = np.concatenate(seen)
    for epoch in range(2):  # Every epoch visits every position once, in a new order.
        assert sorted(stream[epoch * num:(epoch + 1) * num]) == list(range(num))
    assert not np.array_equal(stream[:num], stream[num:2 * num])
    again = pipeline.train_index_dataset(d.train, **kwargs)
    np.testing.assert_array_equal(again[3]["index"], whole[3]["index"])


def test_class_balanced_index_batches_draw_classes_uniformly():
    d = digits.digits_lt(10.0)
    ds = pipeline.train_index_dataset(d.train, global_batch_size=64, seed=1,
                                      sampler="class_balanced")
    labels = np.concatenate([ds[k]["label"] for k in range(100)])
    frequencies = np.bincount(labels, minlength=10) / labels.size
    np.testing.assert_allclose(frequencies, 0.1, atol=0.015)
    index = np.concatenate([ds[k]["index"] for k in range(100)])
    tail = index[labels == 9]  # Every image of the tail class is drawn.
    assert set(tail) == set(np.flatnonzero(d.train.labels == 9))


def test_list_file_datasets_are_refused_by_name():
    imagenet = load_config("imagenet_lt_ce")
    imagenet.data.augment.on_device = True
    found = config_check.problems(imagenet, built=False)
    assert any("config.data.name='imagenet_lt' with data.augment.on_device=True" in p
               for p in found)
    assert any("config.data.augment.kind='imagenet'" in p for p in found)
    config = tiny_config()
    config.data.augment.on_device = True
    config.data.augment.rotation = 15.0
    assert config_check.problems(config, built=False) == []


def test_switching_the_pipeline_changes_the_recipe_but_old_runs_still_match():
    config = tiny_config()
    assert config.data.augment.on_device  # The in-memory datasets' default.
    default = checkpointing.recipe_fingerprint(config)
    host = tiny_config()
    host.data.augment.on_device = False
    older = tiny_config()
    del older.data.augment["on_device"]  # A run written before the field existed: the host's.
    assert checkpointing.recipe_fingerprint(older) == checkpointing.recipe_fingerprint(host)
    assert checkpointing.recipe_fingerprint(host) != default
