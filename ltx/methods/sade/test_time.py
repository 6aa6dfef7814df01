"""SADE's test-time self-supervised aggregation: expert weights learned on unlabelled test images.

The second half of SADE (Zhang et al., "Self-Supervised Aggregation of Diverse Experts for
Test-Agnostic Long-Tailed Recognition", NeurIPS 2022, Sec. 4.2). The trained model is frozen
(inference mode, BatchNorm running statistics); only E raw weights a are learned, and the
ensemble predicts with the aggregation `sum_k softmax(a)_k z_k` of the expert logits z_k instead
of their mean. The objective is prediction stability between two augmented views of each
unlabelled image x:

    p_v = softmax(sum_k softmax(a)_k z_k(view_v(x)))              v = 1, 2
    L(a) = - mean_x cos(p_1, p_2)  [ - 0.01 (H(p_1) + H(p_2)) on iNaturalist 2018 ]

with H(p) = -mean(p log p) over the batch and the classes. A test set that is mostly head
classes makes the head-biased (forward) expert's predictions the most stable, a tail-heavy one
the inverse expert's, so the weights move toward the expert whose prior matches the test prior.

As the official code runs it (Vanint/SADE-AgnosticLT, `test_training_{cifar,imagenet,inat,
places}.py` and the `test_time_*` configs), which `official_settings` reproduces:
  * a initialised to 1/E (uniform weights); SGD, momentum 0.9, Nesterov, weight decay on a;
    batches of 128 in a fresh random order every epoch, the last one smaller; 5 epochs, stopping
    after an epoch in which a weight, rounded to two decimals, is below 0.05;
  * learning rate / weight decay: CIFAR 0.1 / 5e-4, ImageNet-LT 0.025 / 5e-4, iNaturalist 2018
    0.2 / 2e-4 (its objective adds the entropy term above), Places-LT 0.01 / 4e-4;
  * views: CIFAR RandomCrop(32, padding 4), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8,
    RandomGrayscale p 0.2, GaussianBlur (radius in [0.1, 2]) p 0.2, horizontal flip; ImageNet-LT
    the same after RandomResizedCrop(224, scale (0.2, 1)) with blur p 0.5; iNaturalist
    RandomResizedCrop(224) (scale (0.08, 1)) with blur p 0.5. ltx's fixed-size datasets use
    their own training crop and flip (digits-LT: padding 1, no flip), list-file datasets the
    ImageNet-LT views; Places-LT uses the ImageNet-LT views (its script was not compared here).
  * the unlabelled images: on ImageNet-LT, iNaturalist and Places-LT the test distribution's
    own images (the paper's protocol). The CIFAR script instead draws them from CIFAR's
    balanced training images with that distribution's profile; ltx uses the test
    distribution's images on every dataset.

It applies to every model whose ensemble is the mean of its expert logits (`base.mean_aggregate`:
SADE, BalPoE, CE / LA with several experts); methods with their own aggregation (ACE's group
average, RIDE's router, the class-balanced experts' fusions) are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltx import evaluators
from ltx.data import augment, augment_imagenet, splits
from ltx.methods import base

COSINE_EPS = 1e-6  # torch.nn.CosineSimilarity(dim=1, eps=1e-6) in the official scripts.


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the weights are learned (defaults: the official CIFAR script).

    Attributes:
      epochs: passes over the unlabelled set (5).
      batch_size: images per step (128; the last batch of an epoch is smaller).
      learning_rate, momentum, weight_decay: SGD with Nesterov momentum on the raw weights.
      min_weight: stop after an epoch in which a weight rounded to 2 decimals is below this.
      entropy_weight: weight of the entropy bonus (0.01 on iNaturalist 2018, 0 elsewhere).
      crop: 'pad' (zero-pad `crop_padding` pixels, crop back: CIFAR, digits) or 'resized'
        (RandomResizedCrop to `crop_size` with `crop_scale`: the ImageNet-scale sets).
      flip: horizontal flip with probability 0.5.
      jitter: ColorJitter (brightness, contrast, saturation, hue), applied with probability
        `jitter_p`.
      grayscale_p, blur_p: probabilities of RandomGrayscale and GaussianBlur.
    """

    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_weight: float = 0.05
    entropy_weight: float = 0.0
    crop: str = "pad"
    crop_padding: int = 4
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.2

    def __post_init__(self):
        problems = []
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            problems.append(f"epochs={self.epochs!r} (expected an int >= 1)")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            problems.append(f"batch_size={self.batch_size!r} (expected an int >= 1)")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate={self.learning_rate!r} (expected > 0)")
        if self.crop not in ("pad", "resized"):
            problems.append(f"crop={self.crop!r} (expected 'pad' or 'resized')")
        for name in ("jitter_p", "grayscale_p", "blur_p", "min_weight"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}={getattr(self, name)!r} (expected in [0, 1])")
        if problems:
            raise ValueError("test-time aggregation settings: " + "; ".join(problems))


def official_settings(data_config, **overrides) -> Settings:
    """The official script's settings for `config.data` (see the module docstring)."""
    name = data_config.name
    aug = data_config.augment
    if aug.get("kind", "cifar") == "imagenet":
        base = dict(learning_rate=0.025, weight_decay=5e-4, crop="resized",
                    crop_size=int(aug.crop_size), crop_scale=(0.2, 1.0), blur_p=0.5)
        if name == "inaturalist2018":
            base.update(learning_rate=0.2, weight_decay=2e-4, crop_scale=(0.08, 1.0),
                        entropy_weight=0.01)
        elif name == "places_lt":
            base.update(learning_rate=0.01, weight_decay=4e-4)
    else:
        base = dict(crop="pad", crop_padding=int(aug.get("crop_padding", 4)),
                    flip=bool(aug.get("flip", True)))
    base.update(overrides)
    return Settings(**base)


def make_view(settings: Settings) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """One augmented view `fn(image uint8 [H, W, C], rng) -> uint8 [h, w, C]`, in the official
    order: crop, colour jitter, grayscale, blur, flip."""

    def view(image, rng):
        if settings.crop == "pad":
            image = augment.random_crop(image, rng, padding=settings.crop_padding)
        else:
            image = augment_imagenet.random_resized_crop(image, rng, size=settings.crop_size,
                                                         scale=settings.crop_scale)
        if rng.random() < settings.jitter_p:
            b, c, s, h = settings.jitter
            image = augment_imagenet.color_jitter(image, rng, brightness=b, contrast=c,
                                                  saturation=s, hue=h)
        image = augment_imagenet.random_grayscale(image, rng, p=settings.grayscale_p)
        if rng.random() < settings.blur_p:
            image = augment_imagenet.gaussian_blur(image, rng)
        if settings.flip:
            image = augment.random_flip(image, rng)
        return image

    return view


def aggregate(raw_weights: jax.Array, expert_logits: jax.Array) -> jax.Array:
    """`sum_k softmax(a)_k z_k`: raw weights a [E], expert logits [E, B, C] -> [B, C]."""
    weights = jax.nn.softmax(raw_weights.astype(jnp.float32))
    return jnp.einsum("e,ebc->bc", weights, expert_logits.astype(jnp.float32))


def stability_loss(raw_weights: jax.Array, view_a: jax.Array, view_b: jax.Array, *,
                   where: jax.Array | None = None, entropy_weight: float = 0.0) -> jax.Array:
    """SADE's test-time objective: minus the mean cosine similarity of the two views' predictions.

    Args:
      raw_weights: float [E], before the softmax.
      view_a, view_b: expert logits [E, B, C] of the two views of the same B images.
      where: optional bool [B]; only these rows count (a padded last batch).
      entropy_weight: subtracts this times H(p_a) + H(p_b), H = -mean(p log p) over the
        counted rows and all classes (the iNaturalist script's 0.01).

    Returns:
      Scalar float32.
    """
    p_a = jax.nn.softmax(aggregate(raw_weights, view_a), axis=-1)
    p_b = jax.nn.softmax(aggregate(raw_weights, view_b), axis=-1)
    norms = jnp.linalg.norm(p_a, axis=-1) * jnp.linalg.norm(p_b, axis=-1)
    cosine = jnp.sum(p_a * p_b, axis=-1) / jnp.maximum(norms, COSINE_EPS)
    rows = jnp.ones(cosine.shape, bool) if where is None else where
    count = jnp.maximum(jnp.sum(rows), 1)
    loss = -jnp.sum(jnp.where(rows, cosine, 0.0)) / count
    if entropy_weight:
        def entropy(p):
            plogp = jnp.where(rows[:, None], p * jnp.log(p), 0.0)
            return -jnp.sum(plogp) / (count * p.shape[-1])
        loss = loss - entropy_weight * (entropy(p_a) + entropy(p_b))
    return loss


def _optimizer(settings: Settings) -> optax.GradientTransformation:
    # torch.optim.SGD(weight_decay, momentum, nesterov): decay added to the gradient first.
    return optax.chain(optax.add_decayed_weights(settings.weight_decay),
                       optax.sgd(settings.learning_rate, momentum=settings.momentum,
                                 nesterov=True))


@dataclasses.dataclass(frozen=True)
class Learned:
    """What `learn_weights` found.

    Attributes:
      weights: float [E], softmax of the learned raw weights (sum 1).
      epochs: epochs run (fewer than `Settings.epochs` after the early stop).
      losses: mean stability loss of each epoch run (as weighted by batch size).
    """

    weights: np.ndarray
    epochs: int
    losses: tuple[float, ...]


def learn_weights(forward: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray],
                  *, num_experts: int, mean: Sequence[float], std: Sequence[float],
                  settings: Settings = Settings(), seed: int | Sequence[int] = 0) -> Learned:
    """Learns the aggregation weights on unlabelled images.

    Args:
      forward: normalised float32 inputs [B, h, w, C] -> expert logits [E, B, C] of the frozen
        model; always called with `settings.batch_size` rows (a short last batch is padded with
        copies and masked out of the loss), so a jitted forward compiles once.
      images: the unlabelled images, uint8 [H, W, C] each (any size with crop='resized').
      num_experts: E.
      mean, std: the dataset's input normalisation.
      settings: optimisation and views (`official_settings`).
      seed: seeds the epoch orders and every view's random draws (an int or ints).

    Returns:
      `Learned`.
    """
    if len(images) == 0:
        raise ValueError("learn_weights got no images")
    if num_experts < 2:
        raise ValueError(f"test-time aggregation needs >= 2 experts, got {num_experts}")
    view = make_view(settings)
    optimizer = _optimizer(settings)
    raw = jnp.full((num_experts,), 1.0 / num_experts, jnp.float32)
    opt_state = optimizer.init(raw)

    @jax.jit
    def step(raw, opt_state, logits_a, logits_b, where):
        loss, grad = jax.value_and_grad(stability_loss)(
            raw, logits_a, logits_b, where=where, entropy_weight=settings.entropy_weight)
        updates, opt_state = optimizer.update(grad, opt_state, raw)
        return optax.apply_updates(raw, updates), opt_state, loss

    batch = settings.batch_size
    num = len(images)
    epochs_run, losses = 0, []
    for epoch in range(settings.epochs):
        rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), epoch])
        order = rng.permutation(num)
        total = 0.0
        for start in range(0, num, batch):
            chosen = order[start:start + batch]
            pairs = [(view(images[i], rng), view(images[i], rng)) for i in chosen]
            valid = len(pairs)
            pairs += [pairs[0]] * (batch - valid)
            view_a = augment.normalize(np.stack([a for a, _ in pairs]), mean, std)
            view_b = augment.normalize(np.stack([b for _, b in pairs]), mean, std)
            where = np.arange(batch) < valid
            raw, opt_state, loss = step(raw, opt_state, jnp.asarray(forward(view_a)),
                                        jnp.asarray(forward(view_b)), jnp.asarray(where))
            total += float(loss) * valid
        epochs_run += 1
        losses.append(total / num)
        weights = np.asarray(jax.nn.softmax(raw))
        if np.any(np.round(weights, 2) < settings.min_weight):
            break
    return Learned(np.asarray(jax.nn.softmax(raw), np.float64), epochs_run, tuple(losses))


def not_applicable(method: base.Method, num_experts: int | None = None) -> str | None:
    """Why test-time aggregation does not apply to `method` (None: its ensemble is the mean of
    >= 2 expert logits)."""
    num_experts = method.num_experts if num_experts is None else num_experts
    if num_experts < 2:
        return (f"test-time aggregation weights experts; method {method.name!r} predicts with "
                f"{num_experts} expert")
    if method.aggregate is not base.mean_aggregate:
        return (f"test-time aggregation replaces the mean of the expert logits; method "
                f"{method.name!r} aggregates its experts its own way")
    return None


def check_applies(method: base.Method, num_experts: int) -> None:
    """ValueError unless the method's ensemble is the mean of >= 2 expert logits."""
    reason = not_applicable(method, num_experts)
    if reason:
        raise ValueError(reason)


def split_images(split: splits.Split) -> list[np.ndarray]:
    """The uint8 images of a split's records, in split order (decoded for list-file sources)."""
    return [split.source[int(i)]["image"] for i in split.indices]


# -- the evaluator: `config.evals.test_time_aggregation` or `ltx-eval --test_time_aggregation` --

def _evaluate(ctx: evaluators.Context, seed: int = 0, **overrides) -> dict:
    """Learns the weights on every test distribution of the 'shifted' evaluator (with its
    settings) and reports the accuracy with them. `seed` seeds the views and batch orders;
    `overrides` are `Settings` fields replacing the official ones (e.g. epochs=50)."""
    settings = official_settings(ctx.config.data, **overrides)
    results = {}
    shifted = ctx.settings.get("shifted", {})
    for position, (name, sub_experts, _, sub_labels, split) in enumerate(
            evaluators.shifted_predictions(ctx, **shifted)):
        learned = learn_weights(
            lambda inputs: ctx.predict_images(inputs)[0], split_images(split),
            num_experts=int(sub_experts.shape[0]), mean=ctx.dataset.mean, std=ctx.dataset.std,
            settings=settings, seed=(seed, position))
        weighted = np.tensordot(learned.weights, sub_experts, axes=1)  # [N, C]
        results[name] = {"weights": learned.weights.tolist(), "epochs": learned.epochs,
                         "losses": list(learned.losses),
                         "report": ctx.metric_report(sub_experts, weighted, sub_labels)}
    return {"test_time": {"settings": dataclasses.asdict(settings), "seed": seed,
                          "distributions": results}}


def _validate(seed: int = 0, **overrides) -> None:
    del seed
    Settings(**overrides)  # Bad values fail here, before the model is restored.


def _markdown(report: dict) -> list[str]:
    tta = report["test_time"]
    lines = ["## Test-time self-supervised aggregation (SADE)", "",
             f"Expert weights learned on each test distribution's unlabelled images "
             f"(learning rate {tta['settings']['learning_rate']:g}, at most "
             f"{tta['settings']['epochs']} epochs, seed {tta['seed']}); top-1 with them "
             "beside the plain mean of the experts.", "",
             "| test distribution | weights | epochs | top-1 mean | top-1 learned | many "
             "| medium | few |", "|---|---|---|---|---|---|---|---|"]
    for name, d in tta["distributions"].items():
        learned = d["report"]
        weights = ", ".join(f"{w:.3f}" for w in d["weights"])
        plain = report.get("distributions", {}).get(name, {}).get("plain", {})
        cells = [weights, str(d["epochs"]), evaluators.cell(plain.get("top1_samples")),
                 evaluators.cell(learned["top1_samples"]), evaluators.cell(learned["top1_many"]),
                 evaluators.cell(learned["top1_medium"]), evaluators.cell(learned["top1_few"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


EVALUATOR = evaluators.Evaluator(_evaluate, check=not_applicable, validate=_validate,
                                 markdown=_markdown, order=20)
