"""SADE's test-time self-supervised aggregation (ltx.methods.sade.test_time) and its ltx-eval
report."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageFilter

from ltx import report as evaluate
from ltx.data import augment_imagenet
from ltx.methods import base
from ltx.methods.sade import test_time

from helpers import np_softmax


def np_stability(raw, view_a, view_b, where=None, entropy_weight=0.0):
    """The official objective written out: torch CosineSimilarity(dim=1, eps=1e-6) of the two
    views' softmaxed aggregations, mean over the rows, negated; the iNaturalist entropy term."""
    w = np_softmax(np.asarray(raw, np.float64))
    p_a = np_softmax(np.tensordot(w, view_a, axes=1))
    p_b = np_softmax(np.tensordot(w, view_b, axes=1))
    if where is not None:
        p_a, p_b = p_a[where], p_b[where]
    cos = (p_a * p_b).sum(-1) / np.maximum(np.linalg.norm(p_a, axis=-1)
                                           * np.linalg.norm(p_b, axis=-1), 1e-6)
    entropy = -np.mean(p_a * np.log(p_a)) - np.mean(p_b * np.log(p_b))
    return -cos.mean() - entropy_weight * entropy


@pytest.mark.parametrize("entropy_weight", [0.0, 0.01])
def test_stability_loss_equals_the_formula_and_masks_rows(entropy_weight):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=3)
    view_a, view_b = rng.normal(size=(2, 3, 6, 5)) * 3
    where = np.array([True, True, False, True, False, True])
    for mask in (None, where):
        got = test_time.stability_loss(jnp.asarray(raw), jnp.asarray(view_a), jnp.asarray(view_b),
                                       where=None if mask is None else jnp.asarray(mask),
                                       entropy_weight=entropy_weight)
        np.testing.assert_allclose(float(got), np_stability(raw, view_a, view_b, mask,
                                                            entropy_weight), rtol=1e-5)


def test_a_step_is_torch_sgd_with_nesterov_and_coupled_decay():
    """Two steps from a = 1/3 written out as torch.optim.SGD(lr, momentum, wd, nesterov)."""
    settings = test_time.Settings(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    opt = test_time._optimizer(settings)
    a = jnp.full((3,), 1 / 3, jnp.float32)
    state = opt.init(a)
    grads = [np.array([0.3, -0.1, 0.05]), np.array([-0.2, 0.4, 0.1])]
    ref, buf = np.full(3, 1 / 3), None
    for g in grads:
        updates, state = opt.update(jnp.asarray(g, jnp.float32), state, a)
        a = a + updates
        d = g + 5e-4 * ref
        buf = d if buf is None else 0.9 * buf + d
        ref = ref - 0.1 * (d + 0.9 * buf)
    np.testing.assert_allclose(np.asarray(a), ref, rtol=1e-6)


NUM_CLASSES = 10
TRAIN_COUNTS = np.array([int(134 * 10 ** (-i / 9)) for i in range(NUM_CLASSES)])


def _images(counts):
    """Images whose mean pixel encodes the class: 20 c + 40, 8x8 grey."""
    labels = np.repeat(np.arange(NUM_CLASSES), counts)
    return [np.full((8, 8, 1), 20 * c + 40, np.uint8) for c in labels]


def _expert_forward(seed):
    """A frozen 3-expert 'model': noisy class evidence from the mean pixel (fresh noise per call,
    like a second view), plus the forward / uniform / inverse experts' biases log pi, 0, -log pi
    (what SADE's three experts learn)."""
    rng = np.random.default_rng(seed)
    log_prior = np.log(TRAIN_COUNTS / TRAIN_COUNTS.sum())
    biases = np.stack([log_prior, 0 * log_prior, -log_prior])

    def forward(inputs):
        value = inputs.reshape(inputs.shape[0], -1).mean(-1)  # Normalised with mean 0, std 1.
        position = (value * 255 - 40) / 20  # The class, as a real number.
        evidence = -0.5 * (position[:, None] - np.arange(NUM_CLASSES)) ** 2
        evidence = evidence + rng.normal(scale=1.5, size=evidence.shape)
        return (evidence[None] + biases[:, None]).astype(np.float32)

    return forward


@pytest.mark.parametrize("profile,favoured", [("forward", 0), ("backward", 2)])
def test_weights_move_toward_the_expert_of_the_test_prior(profile, favoured):
    """On a head-heavy test set the forward expert gains weight, on a tail-heavy one the inverse
    expert; the uniform start is (1/3, 1/3, 1/3)."""
    counts = np.array([int(60 * 50 ** (-i / 9)) for i in range(NUM_CLASSES)])
    if profile == "backward":
        counts = counts[::-1]
    # 163 images, 3 steps an epoch: a learning rate of 1 instead of CIFAR's 0.1 (whose
    # test sets give 20+ steps an epoch) moves the weights far enough to see the direction.
    settings = test_time.Settings(crop_padding=0, flip=False, jitter_p=0, grayscale_p=0,
                                  blur_p=0, batch_size=64, min_weight=0.0, learning_rate=1.0)
    learned = test_time.learn_weights(_expert_forward(0), _images(counts), num_experts=3,
                                      mean=(0.0,), std=(1.0,), settings=settings, seed=1)
    assert learned.epochs == 5
    np.testing.assert_allclose(learned.weights.sum(), 1.0, rtol=1e-6)
    others = [k for k in range(3) if k != favoured]
    assert learned.weights[favoured] > 1 / 3 + 0.05, learned.weights
    assert all(learned.weights[favoured] > learned.weights[k] for k in others), learned.weights


def test_stops_after_the_epoch_a_weight_falls_below_the_threshold():
    counts = np.array([int(60 * 50 ** (-i / 9)) for i in range(NUM_CLASSES)])
    settings = test_time.Settings(crop_padding=0, flip=False, jitter_p=0, grayscale_p=0,
                                  blur_p=0, batch_size=8, learning_rate=5.0, min_weight=0.3)
    learned = test_time.learn_weights(_expert_forward(0), _images(counts), num_experts=3,
                                      mean=(0.0,), std=(1.0,), settings=settings)
    assert learned.epochs < 5 and len(learned.losses) == learned.epochs
    assert np.round(learned.weights, 2).min() < 0.3


def test_official_settings_per_dataset():
    def data(name, kind, **aug):
        c = ml_collections.ConfigDict({"name": name, "augment": {"kind": kind, **aug}})
        return c
    cifar = test_time.official_settings(data("cifar100_lt", "cifar", crop_padding=4, flip=True))
    assert (cifar.learning_rate, cifar.weight_decay, cifar.blur_p, cifar.crop) == \
        (0.1, 5e-4, 0.2, "pad")
    assert (cifar.epochs, cifar.batch_size, cifar.momentum) == (5, 128, 0.9)
    digits = test_time.official_settings(data("digits_lt", "cifar", crop_padding=1, flip=False))
    assert (digits.crop_padding, digits.flip) == (1, False)
    imagenet = test_time.official_settings(data("imagenet_lt", "imagenet", crop_size=224))
    assert (imagenet.learning_rate, imagenet.crop_scale, imagenet.blur_p) == \
        (0.025, (0.2, 1.0), 0.5)
    inat = test_time.official_settings(data("inaturalist2018", "imagenet", crop_size=224))
    assert (inat.learning_rate, inat.weight_decay, inat.entropy_weight, inat.crop_scale) == \
        (0.2, 2e-4, 0.01, (0.08, 1.0))
    with pytest.raises(ValueError, match="epochs=0"):
        test_time.Settings(epochs=0)


def test_views_keep_the_shape_and_blur_is_pillows():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    view = test_time.make_view(test_time.Settings(jitter_p=1, grayscale_p=1, blur_p=1))
    out = view(image, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1])  # Grayscale with p = 1.
    blurred = augment_imagenet.gaussian_blur(image, np.random.default_rng(2))
    radius = np.random.default_rng(2).uniform(0.1, 2.0)
    expected = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    assert np.array_equal(blurred, expected)
    grey = augment_imagenet.random_grayscale(image, np.random.default_rng(3), p=1.0)
    luma = (image.astype(np.float64) @ [0.299, 0.587, 0.114])
    assert np.abs(grey[..., 0].astype(np.float64) - luma).max() <= 1.0


def test_methods_with_their_own_aggregation_are_refused():
    own = base.Method(name="ace_like", num_experts=3, loss=lambda *a: 0.0,
                      aggregate=lambda outputs, params=None: outputs.logits[0])
    with pytest.raises(ValueError, match="ace_like"):
        test_time.check_applies(own, 3)
    with pytest.raises(ValueError, match="1 expert"):
        test_time.check_applies(dataclasses.replace(own, aggregate=base.mean_aggregate), 1)
    test_time.check_applies(dataclasses.replace(own, aggregate=base.mean_aggregate), 3)


@pytest.mark.slow
def test_eval_report_has_the_learned_weights_and_their_accuracy(tiny_workdir):
    report = evaluate.evaluate_workdir(tiny_workdir, factors=(50,), pictures=False,
                                       evals={"test_time_aggregation": {}})
    tta = report["test_time"]["distributions"]
    assert set(tta) == {"forward-50", "uniform", "backward-50"}
    predictor = evaluate.workdirs.final_predictor(tiny_workdir)
    outputs, _, labels = predictor.predict("test")
    expert_logits = np.asarray(outputs.logits)
    sets = evaluate.shifted_test_sets(labels, 10, max_per_class=100, factors=(50,))
    for name, d in tta.items():
        weights = np.asarray(d["weights"])
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
        assert 1 <= d["epochs"] <= 5
        idx = sets[name]
        mixed = np.tensordot(weights, expert_logits[:, idx], axes=1)
        accuracy = 100 * np.mean(mixed.argmax(-1) == labels[idx])
        assert d["report"]["top1_samples"] == pytest.approx(accuracy)
    markdown = evaluate.format_markdown(report)
    assert "Test-time self-supervised aggregation" in markdown
    again = evaluate.evaluate_workdir(tiny_workdir, factors=(50,), pictures=False,
                                      evals={"test_time_aggregation": {}})
    assert again["test_time"] == report["test_time"]  # Seeded: the same weights.
    jax.clear_caches()
