"""ltx.data.device_autoaugment against the host path's Pillow operations on the same parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import ScriptedRng
from ltx.data import augment, device_augment, device_autoaugment as da


def _images(seed=0, n=48):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    # Smooth images too: few distinct values per image, like the flat areas of photos.
    smooth = np.stack([np.asarray(Image.fromarray(i).resize((6, 6)).resize(
        (32, 32), Image.Resampling.BILINEAR)) for i in noise])
    return np.concatenate([noise, smooth])


# Pillow computes these in double (or its own float order): rare one-level differences.
_ROUNDING = {"ShearX": 5e-3, "ShearY": 5e-3, "AutoContrast": 1e-2}


@pytest.mark.parametrize("name", da.NAMES)
def test_every_operation_is_pillows(name):
    images = _images()
    apply = jax.jit(da.apply_op)
    for level in (0, 4, 9):
        for negative in ((False, True) if name in da.SIGNED else (False,)):
            magnitude = float(augment._LEVELS[name][level]) * (-1 if negative else 1)
            if name in da.BLENDS:  # The enhance factor, as Pillow receives it.
                magnitude = 1.0 + magnitude
            host = np.stack([np.asarray(augment._apply_op(
                Image.fromarray(image), name, level,
                ScriptedRng(randoms=[0.9 if negative else 0.1])))
                for image in images])
            device = np.asarray(apply(
                jnp.asarray(images), jnp.full(len(images), da.NAMES.index(name)),
                jnp.full(len(images), magnitude, jnp.float32)))
            diff = np.abs(host.astype(int) - device.astype(int))
            assert diff.max() <= (1 if name in _ROUNDING else 0), (name, level, negative)
            assert np.mean(diff > 0) <= _ROUNDING.get(name, 0.0), (name, level, negative)


def test_no_operation_leaves_the_image():
    images = _images(n=4)
    out = jax.jit(da.apply_op)(jnp.asarray(images), jnp.full(len(images), -1),
                               jnp.zeros(len(images)))
    np.testing.assert_array_equal(np.asarray(out), images)


def test_rotation_is_pillows_nearest_rotate():
    images = _images(1)
    angles = np.random.default_rng(2).uniform(-15, 15, len(images)).astype(np.float32)
    device = np.asarray(jax.jit(da.rotate)(jnp.asarray(images), jnp.asarray(angles),
                                           jnp.zeros(3)))
    for image, angle, out in zip(images, angles, device):
        host = np.asarray(Image.fromarray(image).rotate(
            float(angle), resample=Image.Resampling.NEAREST, fillcolor=0))
        assert np.mean(np.any(host != out, axis=-1)) <= 1e-3


def test_the_policy_is_the_hosts_for_the_same_draws():
    images = _images(3)
    sub, applied, negative = (np.asarray(x) for x in da.draw_policy(jax.random.key(0),
                                                                   len(images)))
    device = np.asarray(jax.jit(da.autoaugment)(jnp.asarray(images), sub, applied, negative))
    differing = 0
    for b, image in enumerate(images):
        randoms = []
        for k, (name, prob, _) in enumerate(augment.CIFAR10_POLICY[sub[b]]):
            randoms.append(0.0 if applied[b, k] else 0.999)
            if applied[b, k] and name in da.SIGNED:
                randoms.append(0.9 if negative[b, k] else 0.1)
        host = augment.autoaugment_cifar(image, ScriptedRng(int(sub[b]), randoms))
        differing += np.sum(host != device[b])
    assert differing / device.size <= 5e-3


def test_skipping_the_families_a_step_never_uses_changes_no_pixel():
    images = jnp.asarray(_images(5))
    sub, applied, _ = da.draw_policy(jax.random.key(2), len(images))
    assert "ShearY" not in da._STEP_NAMES[1] and "Rotate" not in da._STEP_NAMES[1]
    for k in range(2):
        op = jnp.where(applied[:, k], jnp.asarray(da._STEP_OPS[k])[sub], -1)
        magnitude = jnp.asarray(da._STEP_MAGNITUDES[k])[sub]
        every = jax.jit(da.apply_op)(images, op, magnitude)
        skipping = jax.jit(functools.partial(da.apply_op, ops=da._STEP_NAMES[k]))(
            images, op, magnitude)
        np.testing.assert_array_equal(np.asarray(skipping), np.asarray(every))


def test_policy_draws_are_the_policys_law():
    sub, applied, negative = (np.asarray(x) for x in da.draw_policy(jax.random.key(1),
                                                                   20000))
    np.testing.assert_allclose(np.bincount(sub, minlength=25) / sub.size, 1 / 25, atol=0.006)
    probs = np.array([[s[k][1] for k in range(2)] for s in augment.CIFAR10_POLICY])[sub]
    for k in range(2):
        for p in np.unique(probs[:, k]):
            rows = probs[:, k] == p
            assert abs(applied[rows, k].mean() - p) < 0.03
    assert abs(negative.mean() - 0.5) < 0.01


def test_the_batch_augmentation_runs_every_step_and_refuses_grey_images_for_the_policy():
    config = {"kind": "cifar", "crop_padding": 4, "flip": True, "autoaugment": True,
              "rotation": 15.0}
    fn = jax.jit(device_augment.make_batch_augment(config, mean=augment.CIFAR_MEAN,
                                                   std=augment.CIFAR_STD))
    images = jnp.asarray(_images(n=8))
    out = fn(jax.random.key(0), images)
    assert out.shape == images.shape and out.dtype == jnp.float32
    assert not np.allclose(np.asarray(out), np.asarray(fn(jax.random.key(1), images)))
    grey = device_augment.make_batch_augment(config, mean=(0.5,), std=(0.2,))
    with pytest.raises(ValueError, match="RGB"):
        grey(jax.random.key(0), jnp.zeros((2, 8, 8, 1), jnp.uint8))
