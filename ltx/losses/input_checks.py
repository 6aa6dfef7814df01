"""Argument checks and the dtype rule shared by the loss modules.

Every check runs in Python on shapes and on concrete values, so a bad argument raises a
ValueError at the call (or at trace time under `jax.jit`), before any computation is staged.
Checks that need values (label range, negative counts, hyperparameter ranges) are skipped for
traced arrays. Every message starts with the public function's name (`fn`), names the argument
and the bad value, and says what was expected.

Dtype rule: losses compute in `compute_dtype(inputs)`, float32 at least (bfloat16 and float16
inputs are promoted to float32, float64 stays float64 when x64 is enabled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def compute_dtype(*arrays):
    """The dtype losses compute in: jnp.promote_types(input dtype, float32)."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def is_concrete(x) -> bool:
    """True when x has values now (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def has_values(x) -> bool:
    """True when x's values can be read on this host now (concrete and fully addressable)."""
    if not is_concrete(x):
        return False
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def as_array(x):
    """jax arrays and tracers as they are; anything else (lists, NumPy) through NumPy."""
    return x if isinstance(x, (jax.Array, jax.core.Tracer)) else np.asarray(x)


def array_module(x):
    """`np` for NumPy arrays (concrete class statistics, computed in float64), else `jnp`."""
    return np if isinstance(x, np.ndarray) else jnp


def require_concrete(x, name: str, fn: str) -> None:
    """Raises if x is traced; for static arguments that decide shapes or indices."""
    if not is_concrete(x):
        raise ValueError(f"{fn}: {name} must be a concrete (static) array, not a traced value; "
                         "pass it as a NumPy array closed over by the jitted function")


def check_positive(value, name: str, fn: str, *, allow_zero: bool = False) -> None:
    """Raises if a concrete hyperparameter is not finite and > 0 (>= 0 with allow_zero)."""
    if not has_values(value):
        return
    values = np.asarray(value, np.float64)
    ok = np.isfinite(values) & ((values >= 0) if allow_zero else (values > 0))
    if not ok.all():
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{fn}: {name} must be {expected}, got {value}")


def check_fraction(value, name: str, fn: str) -> None:
    """Raises if a concrete hyperparameter is not in [0, 1) (e.g. class-balanced beta)."""
    if not has_values(value):
        return
    values = np.asarray(value, np.float64)
    if not ((values >= 0) & (values < 1)).all():
        raise ValueError(f"{fn}: {name} must be in [0, 1), got {value}")


def check_logits(logits, fn: str, ndims, layout: str, name: str = "logits") -> jax.Array:
    """logits as a floating jax array whose ndim is in `ndims`; layout names the expected shape
    in errors (e.g. "[B, C]")."""
    logits = as_array(logits)
    if logits.ndim not in ndims:
        raise ValueError(f"{fn}: {name} must be {layout}, got shape {tuple(logits.shape)}")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"{fn}: {name} must be floating point, got dtype {logits.dtype}")
    if logits.shape[-1] < 1:
        raise ValueError(f"{fn}: {name} has no classes, got shape {tuple(logits.shape)}; "
                         "expected C >= 1")
    return jnp.asarray(logits)


def check_labels(labels, fn: str, batch: int | None, num_classes: int):
    """labels as an integer array [B] (`as_array`; any length [N] when batch is None); when their
    values are readable, every label is checked to be in [0, C)."""
    labels = as_array(labels)
    if labels.ndim != 1 or (batch is not None and labels.shape[0] != batch):
        expected = "1-D [N]" if batch is None else f"[B] with B = {batch} (the logits' batch)"
        raise ValueError(f"{fn}: labels must be {expected}, got shape {tuple(labels.shape)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{fn}: labels must be integer class ids, got dtype {labels.dtype}")
    if has_values(labels):
        values = np.asarray(labels)
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise ValueError(f"{fn}: labels must be in [0, {num_classes}), got "
                             f"{bad[:8].tolist()}{' ...' if bad.size > 8 else ''}")
    return labels


def check_counts(class_counts, fn: str, num_classes: int | None = None, *, positive: bool):
    """Checks per-class training counts [C] (C = num_classes when given).

    Concrete counts must be finite and > 0 (`positive`) or >= 0 with a positive sum; they are
    returned as float64 NumPy, so that class statistics can be computed in float64 as the official
    codes do (`array_module` gives the matching `np`). Traced counts are only shape-checked and
    returned as a jax array in `compute_dtype`.
    """
    counts = as_array(class_counts)
    if counts.ndim != 1 or counts.shape[0] < 1:
        raise ValueError(f"{fn}: class_counts must be a non-empty [C] vector, got shape "
                         f"{tuple(counts.shape)}")
    if num_classes is not None and counts.shape[0] != num_classes:
        raise ValueError(f"{fn}: class_counts has {counts.shape[0]} entries but the logits have "
                         f"C = {num_classes} classes")
    if not has_values(counts):
        return counts.astype(compute_dtype(counts))
    counts = np.asarray(counts, np.float64)
    bad = ~np.isfinite(counts) | ((counts <= 0) if positive else (counts < 0))
    if bad.any():
        expected = ("positive (every class needs training images)" if positive
                    else "non-negative")
        idx = np.flatnonzero(bad)[:8]
        raise ValueError(f"{fn}: class_counts must be finite and {expected}, got "
                         f"{counts[idx].tolist()} for classes {idx.tolist()}")
    if counts.sum() <= 0:
        raise ValueError(f"{fn}: class_counts must have a positive sum (at least one training "
                         "image), got all zeros")
    return counts


def check_class_weights(class_weights, fn: str, num_classes: int, dtype):
    """Optional per-class loss weights [C], as a jax array in dtype (None stays None)."""
    if class_weights is None:
        return None
    weights = jnp.asarray(class_weights, dtype)
    if weights.shape != (num_classes,):
        raise ValueError(f"{fn}: class_weights must be [C] = [{num_classes}], got shape "
                         f"{tuple(weights.shape)}")
    return weights


def check_class_mask(mask, fn: str, name: str, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """A static boolean class mask as a NumPy bool array of the given shape."""
    require_concrete(mask, name, fn)
    values = np.asarray(mask)
    if values.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} has shape {values.shape}; expected {layout} = "
                         f"{tuple(shape)}")
    if values.dtype != np.bool_:
        if not (np.issubdtype(values.dtype, np.number) and np.isin(values, (0, 1)).all()):
            raise ValueError(f"{fn}: {name} must be boolean (or 0/1), got dtype {values.dtype}")
        values = values.astype(bool)
    return values


def check_where(where, fn: str, batch: int):
    """`where` as a bool [B] row mask (None stays None); a padded batch marks its padding False."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.shape != (batch,):
        raise ValueError(f"{fn}: where must be a bool [B] = ({batch},) mask over the batch, got "
                         f"shape {tuple(where.shape)}")
    if where.dtype != jnp.bool_:
        raise ValueError(f"{fn}: where must be boolean, got dtype {where.dtype}")
    return where


def batch_mean(values: jax.Array, where=None) -> jax.Array:
    """Mean over the last (batch) axis [..., B] -> [...], over the rows where `where` [B] is True
    only: the mean of the smaller batch that a padded one stands for."""
    if where is None:
        return jnp.mean(values, axis=-1)
    total = jnp.sum(jnp.where(where, values, 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(where.astype(values.dtype)), 1.0)


def weighted_mean(nll: jax.Array, weights, where=None) -> jax.Array:
    """Mean over the last (batch) axis; with per-sample weights [B], PyTorch's weighted mean
    sum_i w_i nll_i / sum_i w_i. Rows where `where` [B] is False count in neither sum."""
    if weights is None:
        return batch_mean(nll, where)
    if where is not None:
        weights = jnp.where(where, weights, 0.0)
        nll = jnp.where(where, nll, 0.0)
    return jnp.sum(weights * nll, axis=-1) / jnp.sum(weights)


def safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with gradient 0 (not inf or NaN) at x = 0, as PyTorch's norm backward."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)
