"""The decoupled classifiers as pure functions of features and classifier weights.

Shapes: E experts, N (or B) images, F feature dimensions, C classes. Kernels are in flax's
`nn.Dense` layout [F, C] (the transpose of PyTorch's `nn.Linear.weight` [C, F]), so the weight
vector w_c of class c is column c; "the norm of w_c" is a column norm here and a row norm in the
official code.

- tau-normalisation (`tau_normalize`, `tau_norm_logits`): w_c / ||w_c||^tau, logits f . w~_c
  without the bias, as the official `tau_norm.py` (`pnorm` then a plain dot product).
- tau selection (`tau_sweep`, `select_tau`): the per-class mean accuracy of the aggregated
  prediction for every tau of a grid, the first best one.
- LWS (`lws_logits`): f_c (w_c . x + b_c), the official `TauNormClassifier` (which scales the
  whole output of the frozen `fc`, bias included).
- NCM (`ncm_statistics`, `ncm_logits`): the official `KNNClassifier` and
  `run_networks.get_knncentroids`: feature transform 'un' | 'l2n' | 'cl2n' (centred on the
  training mean, then L2-normalised; the default), class means of the transformed training
  features (not renormalised), and the negative squared Euclidean distance ('l2', the default)
  or the dot product divided by F ('cos').
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ltx import metrics
from ltx.methods.decoupled.config import DISTANCES, FEATURE_TYPES, TAU_GRID
from ltx.models.heads import NORMALIZE_EPS, l2_normalize
from ltx.outputs import Outputs



def _floating(x, name: str, fn: str, ndims, layout: str) -> jax.Array:
    x = x if isinstance(x, (jax.Array, jax.core.Tracer)) else np.asarray(x)
    if x.ndim not in ndims:
        raise ValueError(f"{fn}: {name} must be {layout}, got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: {name} must be floating point, got dtype {x.dtype}")
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_tau(tau, fn: str) -> None:
    if isinstance(tau, jax.core.Tracer):
        return
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: tau must be a number >= 0, got {tau!r}") from None
    if isinstance(tau, bool) or not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: tau must be a finite number >= 0, got {tau!r}")


def tau_normalize(kernel, tau) -> jax.Array:
    """w_c / ||w_c||^tau for every class column of `kernel`.

    tau = 0 leaves the kernel as it is; tau = 1 gives unit-norm columns (the logits are then
    ||f|| cos(f, w_c)). A column of norm 0 stays 0 (its norm is floored at 1e-12, as
    `torch.nn.functional.normalize`; the official `pnorm` divides by 0).

    Args:
      kernel: float [..., F, C].
      tau: number >= 0 (or a traced scalar).

    Returns:
      float [..., F, C], float32 or wider.
    """
    fn = "tau_normalize"
    kernel = _floating(kernel, "kernel", fn, range(2, 6), "[..., F, C]")
    _check_tau(tau, fn)
    norms = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=-2, keepdims=True))
    return kernel / jnp.power(jnp.maximum(norms, NORMALIZE_EPS), tau)


def tau_norm_logits(features, kernel, tau) -> jax.Array:
    """Logits of the tau-normalised classifier, f . w_c / ||w_c||^tau, no bias.

    The paper drops the biases (it found them negligible); the official `tau_norm.py` computes
    the logits as the dot product with the normalised weights, which is the same.

    Args:
      features: float [E, B, F] pooled features of each expert.
      kernel: float [E, F, C] each expert's classifier kernel.
      tau: number >= 0.

    Returns:
      float [E, B, C].
    """
    fn = "tau_norm_logits"
    features = _floating(features, "features", fn, (3,), "[E, B, F]")
    kernel = _floating(kernel, "kernel", fn, (3,), "[E, F, C]")
    if features.shape[0] != kernel.shape[0] or features.shape[2] != kernel.shape[1]:
        raise ValueError(f"{fn}: features {tuple(features.shape)} [E, B, F] and kernel "
                         f"{tuple(kernel.shape)} [E, F, C] must agree on E and F")
    return jnp.einsum("ebf,efc->ebc", features, tau_normalize(kernel, tau))


def balanced_accuracy(logits, labels, num_classes: int) -> float:
    """The mean over the classes present in `labels` of their accuracy (the official
    `preds2accs`' `np.mean(cls_accs)`, ltx's `top1_all` as a fraction): logits [N, C]."""
    predictions = jnp.argmax(jnp.asarray(logits), axis=-1)
    per_class = np.asarray(metrics.per_class_accuracy(predictions, labels, num_classes))
    return float(np.nanmean(per_class))


def tau_sweep(features, kernel, labels, *, taus=TAU_GRID,
              aggregate: Callable[[Outputs], jax.Array] | None = None) -> np.ndarray:
    """The balanced accuracy (`balanced_accuracy`) of the tau-normalised classifier for every tau.

    Args:
      features: float [E, N, F] of the selection split.
      kernel: float [E, F, C].
      labels: int [N].
      taus: the grid (`TAU_GRID`, the official one, by default).
      aggregate: `Outputs with logits [E, N, C] -> [N, C]`, the method's aggregation (default:
        the mean of the expert logits).

    Returns:
      float64 [len(taus)], fractions in [0, 1].
    """
    fn = "tau_sweep"
    taus = tuple(float(t) for t in taus)
    if not taus:
        raise ValueError(f"{fn}: taus is empty; expected a grid of values >= 0")
    for tau in taus:
        _check_tau(tau, fn)
    kernel = _floating(kernel, "kernel", fn, (3,), "[E, F, C]")
    labels = np.asarray(labels)
    num_classes = kernel.shape[-1]
    if labels.ndim != 1 or labels.shape[0] != np.shape(features)[1]:
        raise ValueError(f"{fn}: labels has shape {labels.shape}; expected [N] with N = "
                         f"{np.shape(features)[1]}, the images of features")
    aggregate = aggregate or (lambda outputs: jnp.mean(outputs.logits, axis=0))
    result = []
    for tau in taus:
        logits = aggregate(Outputs(tau_norm_logits(features, kernel, tau)))
        result.append(balanced_accuracy(logits, labels, num_classes))
    return np.asarray(result, np.float64)


def select_tau(accuracies, taus=TAU_GRID) -> float:
    """The tau of the highest accuracy (the first, i.e. smallest tau on ties)."""
    accuracies = np.asarray(accuracies, np.float64)
    taus = tuple(float(t) for t in taus)
    if accuracies.shape != (len(taus),):
        raise ValueError(f"select_tau: {accuracies.shape[0] if accuracies.ndim else 0} "
                         f"accuracies for {len(taus)} taus; expected one each")
    return taus[int(np.argmax(accuracies))]


def lws_logits(logits, scales) -> jax.Array:
    """LWS: each expert's logits [E, B, C] times its learnt class scales [E, C] (f_c)."""
    fn = "lws_logits"
    logits = _floating(logits, "logits", fn, (3,), "[E, B, C]")
    scales = _floating(scales, "scales", fn, (2,), "[E, C]")
    if scales.shape != (logits.shape[0], logits.shape[2]):
        raise ValueError(f"{fn}: scales has shape {tuple(scales.shape)}; expected [E, C] = "
                         f"{(logits.shape[0], logits.shape[2])}")
    return scales[:, None, :] * logits


def _check_ncm_options(feature_type: str, distance: str, fn: str) -> None:
    if feature_type not in FEATURE_TYPES:
        raise ValueError(f"{fn}: feature_type={feature_type!r}; expected one of "
                         f"{FEATURE_TYPES}")
    if distance not in DISTANCES:
        raise ValueError(f"{fn}: distance={distance!r}; expected one of {DISTANCES}")


def ncm_transform(features, mean, feature_type: str) -> jax.Array:
    """The official feature transform: 'un' as is, 'l2n' L2-normalised, 'cl2n' minus the
    training mean, then L2-normalised. features [E, N, F], mean [E, F] -> [E, N, F]."""
    fn = "ncm_transform"
    _check_ncm_options(feature_type, "l2", fn)
    features = _floating(features, "features", fn, (3,), "[E, N, F]")
    if feature_type == "cl2n":
        features = features - jnp.asarray(mean, features.dtype)[:, None, :]
    if feature_type in ("l2n", "cl2n"):
        features = l2_normalize(features, axis=-1)
    return features


def ncm_statistics(features, labels, num_classes: int, feature_type: str = "cl2n"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """NCM's training statistics: the feature mean and the class means of the transformed
    features.

    Args:
      features: float [E, N, F], the training split's features (the official `train_plain`:
        evaluation transform, BatchNorm in inference mode).
      labels: int [N] in [0, C).
      num_classes: C; every class needs at least one image.
      feature_type: 'un', 'l2n' or 'cl2n' (`ncm_transform`).

    Returns:
      (mean float32 [E, F] over all N images, centroids float32 [E, C, F]).
    """
    fn = "ncm_statistics"
    _check_ncm_options(feature_type, "l2", fn)
    features = np.asarray(_floating(features, "features", fn, (3,), "[E, N, F]"))
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != features.shape[1]:
        raise ValueError(f"{fn}: labels has shape {labels.shape}; expected [N] with N = "
                         f"{features.shape[1]}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{fn}: labels must be in [0, {num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    if not np.all(counts > 0):
        missing = np.flatnonzero(counts == 0)
        raise ValueError(f"{fn}: classes {missing[:10].tolist()} have no training image; NCM "
                         "needs a mean feature for every class")
    mean = features.mean(axis=1)
    transformed = np.asarray(ncm_transform(features, mean, feature_type), np.float64)
    one_hot = np.eye(num_classes)[labels]  # [N, C]
    centroids = np.einsum("nc,enf->ecf", one_hot, transformed) / counts[None, :, None]
    return mean.astype(np.float32), centroids.astype(np.float32)


def ncm_logits(features, mean, centroids, *, feature_type: str = "cl2n",
               distance: str = "l2") -> jax.Array:
    """NCM scores of every class: -||x - c_k||^2 ('l2') or x . c_k / F ('cos'), x the
    transformed features (`ncm_transform`), c_k the class means (`ncm_statistics`).

    The official 'cos' divides the dot product by F and normalises neither side beyond the
    feature transform; it is reproduced as such.

    Args:
      features: float [E, B, F].
      mean: float [E, F], the training features' mean.
      centroids: float [E, C, F].

    Returns:
      float [E, B, C].
    """
    fn = "ncm_logits"
    _check_ncm_options(feature_type, distance, fn)
    features = _floating(features, "features", fn, (3,), "[E, B, F]")
    centroids = _floating(centroids, "centroids", fn, (3,), "[E, C, F]")
    if centroids.shape[0] != features.shape[0] or centroids.shape[2] != features.shape[2]:
        raise ValueError(f"{fn}: features {tuple(features.shape)} [E, B, F] and centroids "
                         f"{tuple(centroids.shape)} [E, C, F] must agree on E and F")
    x = ncm_transform(features, mean, feature_type)
    dots = jnp.einsum("ebf,ecf->ebc", x, centroids)
    if distance == "cos":
        return dots / features.shape[-1]
    squared_x = jnp.sum(jnp.square(x), axis=-1)[:, :, None]
    squared_c = jnp.sum(jnp.square(centroids), axis=-1)[:, None, :]
    return -(squared_x + squared_c - 2.0 * dots)
