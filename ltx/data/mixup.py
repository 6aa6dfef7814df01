"""Mixup (Zhang et al. 2018) as one pure function of a batch, usable by any method.

As in BalPoE's `Combiner.mixup` (and ACE's mix_up_group): one coefficient lam ~ Beta(alpha, alpha)
per batch, one permutation of the batch; images are mixed, and the loss is the same mix of the loss
under the original labels and under the permuted labels. Every expert sees the same mixed images.
Under jit over a batch-sharded mesh the permutation is a global one. In a padded batch (`mask`)
the real rows are permuted among themselves, as the official code permutes the smaller last batch
(`torch.randperm(batch_size)`), and no padding row is mixed into a real one.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def mixup(rng: jax.Array, images: jax.Array, labels: jax.Array, *, alpha: float,
          mask: jax.Array | None = None):
    """Mixes a batch.

    Args:
      rng: PRNG key for lam and the permutation.
      images: float [B, H, W, C].
      labels: int [B].
      alpha: Beta(alpha, alpha) concentration; must be > 0.
      mask: optional bool [B], the real rows of a padded batch; the permutation maps real rows to
        real rows and leaves the padding in place.

    Returns:
      (mixed_images [B, H, W, C], labels [B], permuted_labels [B], lam scalar).
    """
    if not alpha > 0:
        raise ValueError(f"mixup alpha={alpha}; expected alpha > 0 (set mixup_alpha=0 to turn "
                         "mixup off)")
    lam_rng, perm_rng = jax.random.split(rng)
    lam = jax.random.beta(lam_rng, alpha, alpha).astype(images.dtype)
    if mask is None:
        perm = jax.random.permutation(perm_rng, images.shape[0])
    else:
        perm = masked_permutation(perm_rng, mask)
    mixed = lam * images + (1.0 - lam) * images[perm]
    return mixed, labels, labels[perm], lam


def masked_permutation(rng: jax.Array, mask: jax.Array) -> jax.Array:
    """int32 [B]: a uniformly random permutation of the rows where `mask` [B] is True, identity
    on the others.

    The real rows sorted by iid uniform keys come out in uniformly random order; they are written
    back into the real rows' positions (in order), the padding rows after them in order.
    """
    batch = mask.shape[0]
    keys = jnp.where(mask, jax.random.uniform(rng, (batch,)), 2.0 + jnp.arange(batch) / batch)
    positions = jnp.argsort(jnp.logical_not(mask), stable=True)
    return jnp.zeros((batch,), jnp.int32).at[positions].set(
        jnp.argsort(keys).astype(jnp.int32))


def mixup_loss(loss_fn: Callable[[jax.Array], jax.Array], labels: jax.Array,
               permuted_labels: jax.Array, lam: jax.Array) -> jax.Array:
    """lam * loss_fn(labels) + (1 - lam) * loss_fn(permuted_labels)."""
    return lam * loss_fn(labels) + (1.0 - lam) * loss_fn(permuted_labels)
