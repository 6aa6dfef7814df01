"""grain input pipelines: a deterministic, checkpointable training stream and padded eval batches.

Training reads the long-tailed index array as one endless stream of elements in which epoch e is
a fresh permutation of the split (grain's shuffle before repeat reshuffles per epoch) and occupies
stream positions [e N, (e + 1) N). `Epochs` cuts that stream into steps as `data.last_batch`
says:
- 'pad' (the default, PyTorch's `DataLoader(drop_last=False)` of every official code base): an
  epoch is ceil(N / B) steps and its last batch holds the N mod B remaining images. So that no
  step changes shape, that batch is padded to B rows (repeats of its own images) and carries a
  `mask` [B] that is False on the padding; losses, metrics and BatchNorm statistics count only
  the masked-in rows, which makes the padded step the smaller batch's step.
- 'drop' (`drop_last=True`): floor(N / B) full steps per epoch, the remainder of each epoch unused.
- 'stream' (ltx before the official accounting): full batches run across epoch boundaries,
  N / B (fractional) steps per epoch, nothing dropped, no mask.
Augmentation draws from a generator that grain derives from the seed and the element's stream
position, so a run is reproducible and the stream can be resumed from its iterator state alone,
whatever the number of workers.

On several hosts process p reads the slots [p b, (p + 1) b) of every global batch,
b = global_batch_size / process_count; the trainer assembles the global batch with
`jax.make_array_from_process_local_data`, so the global batch (and its mask) is the same for any
number of processes.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import math
import os
import sys
import weakref
from typing import Callable, Iterator

import grain
import numpy as np

from ltx.data import augment as augment_lib
from ltx.data import augment_imagenet
from ltx.data import splits

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
EvalTransform = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Sharding:
    """Which slice of the global stream this process reads."""

    process_index: int = 0
    process_count: int = 1

    def local_batch_size(self, global_batch_size: int) -> int:
        if global_batch_size % self.process_count:
            raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                             f"{self.process_count} processes")
        return global_batch_size // self.process_count


LAST_BATCH = ("pad", "drop", "stream")
SAMPLERS = ("shuffle", "class_balanced")


@dataclasses.dataclass(frozen=True)
class Epochs:
    """How the element stream is cut into steps (see the module docstring).

    Attributes:
      num_examples: N, images per epoch.
      global_batch_size: B.
      last_batch: 'pad', 'drop' or 'stream'.
    """

    num_examples: int
    global_batch_size: int
    last_batch: str = "pad"

    def __post_init__(self):
        if self.last_batch not in LAST_BATCH:
            raise ValueError(f"data.last_batch={self.last_batch!r}; expected one of {LAST_BATCH}")
        if self.num_examples <= 0 or self.global_batch_size <= 0:
            raise ValueError(f"{self.num_examples} examples in batches of "
                             f"{self.global_batch_size}; expected both > 0")
        if self.last_batch == "drop" and self.num_examples < self.global_batch_size:
            raise ValueError(f"data.last_batch='drop' with {self.num_examples} training images "
                             f"and batch_size={self.global_batch_size} leaves no step; use 'pad' "
                             "or a smaller batch")

    @property
    def steps_per_epoch(self) -> float:
        """ceil(N / B) ('pad'), floor(N / B) ('drop'), N / B ('stream', may be fractional)."""
        n, b = self.num_examples, self.global_batch_size
        if self.last_batch == "pad":
            return -(-n // b)
        if self.last_batch == "drop":
            return n // b
        return n / b

    def total_steps(self, num_epochs: float) -> int:
        """Steps of `num_epochs` epochs (a fractional epoch count rounds up)."""
        return math.ceil(num_epochs * self.steps_per_epoch)

    def batch(self, step: int) -> tuple[int, int]:
        """(stream position of the batch's first element, number of real rows) of `step`."""
        n, b = self.num_examples, self.global_batch_size
        if self.last_batch == "stream":
            return step * b, b
        epoch, j = divmod(step, int(self.steps_per_epoch))
        return epoch * n + j * b, min(b, n - j * b)


class _EpochBatches(grain.MapDataset):
    """Element k is this process's part of global batch k of `epochs`, from the element stream
    `parent` of records {'image' or 'index', 'label'}: each field stacked to [b, ...] ('label'
    int32) and, unless streaming, 'mask' bool [b]."""

    def __init__(self, parent: grain.MapDataset, epochs: Epochs, sharding: "Sharding"):
        super().__init__(parent)
        self._epochs = epochs
        self._local = sharding.local_batch_size(epochs.global_batch_size)
        self._first_slot = sharding.process_index * self._local

    def __len__(self) -> int:
        return sys.maxsize

    def __str__(self) -> str:
        return f"EpochBatches({self._epochs})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        start, count = self._epochs.batch(int(index))
        slots = np.arange(self._first_slot, self._first_slot + self._local)
        # Padding rows repeat the batch's own images: real, finite data that the mask removes.
        records = self._parent._getitems([start + int(t % count) for t in slots])  # noqa: SLF001
        batch = {key: np.stack([r[key] for r in records]) for key in records[0]}
        batch["label"] = batch["label"].astype(np.int32)
        if self._epochs.last_batch != "stream":
            batch["mask"] = slots < count
        return batch


def _normalizer(mean, std):
    def fn(record):
        return {"image": augment_lib.normalize(record["image"], mean, std),
                "label": np.int32(record["label"])}
    return fn


def train_dataset(
    split: splits.Split,
    *,
    global_batch_size: int,
    seed: int,
    mean,
    std,
    transform: Transform | None = None,
    sharding: Sharding = Sharding(),
    sampler: str = "shuffle",
    last_batch: str = "pad",
) -> grain.MapDataset:
    """An endless random-access dataset of local training batches.

    Args:
      split: the (long-tailed) training split.
      global_batch_size: images per step over all processes.
      seed: shuffling and augmentation seed.
      mean, std: per-channel normalisation.
      transform: `fn(uint8 [h, w, C], rng) -> uint8 [H, W, C]` augmentation, or None; its
        outputs (or the records, without one) must share one shape to batch.
      sharding: this process's slice.
      sampler: 'shuffle' (every epoch a permutation of the split) or 'class_balanced' (RIDE's
        `BalancedSampler` for the router stage: each draw picks a class uniformly, then an image
        of that class uniformly; the official sampler walks a shuffled per-class bucket instead,
        i.e. draws without replacement within a class); an epoch is still N draws.
      last_batch: how epochs become steps, 'pad', 'drop' or 'stream' (`Epochs`).

    Returns:
      A MapDataset whose element k is the process's part of global batch k:
      {'image': float32 [b, H, W, C], 'label': int32 [b], 'mask': bool [b] (not with
      'stream')}, b = global_batch_size / processes.
    """
    epochs = Epochs(len(split), global_batch_size, last_batch)
    source, indices = split.source, np.asarray(split.indices)
    ds = _positions(split, seed, sampler).map(lambda p: source[int(indices[p])])
    if transform is not None:
        ds = ds.random_map(lambda r, rng: {"image": transform(r["image"], rng),
                                           "label": r["label"]})
    ds = ds.map(_normalizer(mean, std))
    return _EpochBatches(ds, epochs, sharding)  # Checks the batch splits over the processes.


def train_index_dataset(split: splits.Split, *, global_batch_size: int, seed: int,
                        sharding: Sharding = Sharding(), sampler: str = "shuffle",
                        last_batch: str = "pad") -> grain.MapDataset:
    """`train_dataset`'s epochs as positions into the split, for augmentation on device.

    The same epochs, padding and sharding as `train_dataset`, computed a batch at a time with
    NumPy instead of an element at a time through grain (which alone would cap the device path
    at ~20,000 images/s on one core), so the order is another one: epoch e is the permutation
    `np.random.default_rng([seed, e]).permutation(N)`; with the 'class_balanced' sampler the
    global batch k draws its classes, then an image of each, from
    `np.random.default_rng([seed, k])`. Element k is this process's part of global batch k:
    {'index': int32 [b] positions in `split` (row `split.indices[p]` of its source),
    'label': int32 [b], 'mask': bool [b] (not with 'stream')}. The iterator state is the
    batch number, as for `train_dataset`.
    """
    epochs = Epochs(len(split), global_batch_size, last_batch)
    if sampler not in SAMPLERS:
        raise ValueError(f"data.sampler={sampler!r}; expected one of {SAMPLERS}")
    local = sharding.local_batch_size(global_batch_size)
    slots = np.arange(sharding.process_index * local, (sharding.process_index + 1) * local)
    labels = np.asarray(split.labels)
    num = len(split)
    permutations: dict[int, np.ndarray] = {}

    def permutation(epoch: int) -> np.ndarray:
        if epoch not in permutations:
            if len(permutations) >= 2:  # A batch spans at most two epochs.
                permutations.pop(min(permutations))
            permutations[epoch] = np.random.default_rng([seed, epoch]).permutation(num)
        return permutations[epoch]

    classes = np.unique(labels)
    buckets = [np.flatnonzero(labels == c) for c in classes]

    def batch(k):
        start, count = epochs.batch(int(k))
        stream = start + slots % count  # Padding rows repeat the batch's own elements.
        if sampler == "shuffle":
            epoch, within = np.divmod(stream, num)
            positions = np.empty(local, np.int64)
            for e in np.unique(epoch):
                rows = epoch == e
                positions[rows] = permutation(int(e))[within[rows]]
        else:
            rng = np.random.default_rng([seed, int(k)])
            drawn_classes = rng.integers(len(buckets), size=global_batch_size)
            picks = rng.random(global_batch_size)
            draws = np.array([buckets[c][int(u * buckets[c].size)]
                              for c, u in zip(drawn_classes, picks)])
            positions = draws[slots % count]
        out = {"index": positions.astype(np.int32), "label": labels[positions].astype(np.int32)}
        if last_batch != "stream":
            out["mask"] = slots < count
        return out

    return grain.MapDataset.range(0, sys.maxsize).map(batch)


def _positions(split: splits.Split, seed: int, sampler: str) -> grain.MapDataset:
    """The endless stream of positions into `split` that `sampler` draws."""
    positions = np.arange(len(split))
    if sampler == "shuffle":
        return grain.MapDataset.source(positions).seed(seed).shuffle().repeat(None)
    if sampler == "class_balanced":
        return grain.MapDataset.source(positions).seed(seed).repeat(None).random_map(
            _class_balanced_draw(split))
    raise ValueError(f"data.sampler={sampler!r}; expected one of {SAMPLERS}")


def _class_balanced_draw(split: splits.Split):
    """`fn(_, rng) -> position in split`: a uniformly drawn class present in `split`, then one
    of its images uniformly."""
    labels = np.asarray(split.labels)
    classes = np.unique(labels)
    buckets = [np.flatnonzero(labels == c) for c in classes]

    def draw(_, rng: np.random.Generator):
        bucket = buckets[rng.integers(len(buckets))]
        return bucket[rng.integers(bucket.size)]

    return draw


AUTO_WORKERS = -1  # data.num_workers: one worker process per core but one, at most 16.


def resolve_num_workers(num_workers: int) -> int:
    """`data.num_workers` as a count: itself, or for AUTO_WORKERS the cores this process may
    use less one (the main process feeds the devices), between 0 and 16."""
    if num_workers != AUTO_WORKERS:
        return int(num_workers)
    return max(0, min(16, len(os.sched_getaffinity(0)) - 1))


# Iterators with worker processes that are still open; `_close_open_iterators` closes them at
# interpreter exit.
_OPEN_ITERATORS: "weakref.WeakSet[grain.DatasetIterator]" = weakref.WeakSet()


def _close_open_iterators() -> None:
    """Closes every worker-backed training iterator still alive at exit.

    grain's workers hand batches over in POSIX shared memory that the reading process unlinks
    when it consumes (or `close()` discards) them. An iterator that is still referenced when the
    interpreter exits (the trainer's lives on in a reference cycle) is never closed:
    multiprocessing's own exit hook kills its workers with batches still queued, and the
    resource tracker then warns of "leaked shared_memory objects" and unlinks them itself.
    This hook runs first (atexit runs hooks in reverse order of registration, and
    multiprocessing registers its hook on import, before this module is loaded).
    """
    for iterator in list(_OPEN_ITERATORS):
        try:
            iterator.close()
        except Exception:  # pylint: disable=broad-except
            pass  # Exiting anyway; the resource tracker cleans up what is left.


atexit.register(_close_open_iterators)


def train_iterator(dataset: grain.MapDataset, *, num_workers: int = 0,
                   prefetch: int = 2) -> grain.DatasetIterator:
    """A checkpointable iterator (`get_state()` / `set_state()`) over `train_dataset`, read by
    `num_workers` worker processes (AUTO_WORKERS: `resolve_num_workers`).

    Call its `close()` when done with it: that stops the workers and frees the batches they
    prefetched into shared memory. One still open when the process exits is closed then.
    """
    num_workers = resolve_num_workers(num_workers)
    it_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=max(prefetch, 1),
                                                      prefetch_buffer_size=prefetch))
    if num_workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    iterator = iter(it_ds)
    if num_workers > 0:
        _OPEN_ITERATORS.add(iterator)
    return iterator


def eval_batches(
    split: splits.Split,
    *,
    global_batch_size: int,
    mean,
    std,
    transform: EvalTransform | None = None,
    sharding: Sharding = Sharding(),
    threads: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields every record of `split` once, in order, as padded local batches.

    Every process yields the same number of batches (padding with `mask == False` rows), so a
    jitted eval step sees one shape and no host waits on another. `transform` (the dataset's
    `eval_transform`, e.g. resize + centre crop) maps each record's image before normalisation;
    records that need it (decoded files) are read by a pool of `threads` threads (default: one
    per core, at most 16; Pillow releases the GIL while it decodes and resizes), in order.

    Yields:
      {'image': float32 [b, H, W, C], 'label': int32 [b], 'mask': bool [b], 'index': int64 [b]}
      where 'index' is the position in the split (-1 for padding).
    """
    local = sharding.local_batch_size(global_batch_size)
    num = len(split)
    num_batches = -(-num // global_batch_size)
    positions = np.arange(num)[sharding.process_index::sharding.process_count]
    normalize = _normalizer(mean, std)

    def prepare(position):
        record = split.source[int(split.indices[position])]
        if transform is not None:
            record = {"image": transform(record["image"]), "label": record["label"]}
        return normalize(record)

    if threads is None:
        threads = min(16, len(os.sched_getaffinity(0))) if transform is not None else 1
    pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
    read = (lambda chunk: list(pool.map(prepare, chunk))) if pool else (
        lambda chunk: [prepare(p) for p in chunk])
    try:
        yield from _padded_batches(read, positions, local, num_batches, prepare)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _padded_batches(read, positions, local, num_batches, prepare):
    """`eval_batches`' batches of the positions, `read(chunk)` giving the prepared records."""
    for b in range(num_batches):
        chunk = positions[b * local:(b + 1) * local]
        records = read(chunk)
        pad = local - len(chunk)
        if records:
            images = np.stack([r["image"] for r in records])
            labels = np.asarray([r["label"] for r in records], np.int32)
        else:  # This process has run out of records; it still joins the step.
            first = prepare(0)
            images = np.zeros((0,) + first["image"].shape, np.float32)
            labels = np.zeros((0,), np.int32)
        yield {
            "image": np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.float32)]),
            "label": np.concatenate([labels, np.zeros((pad,), np.int32)]),
            "mask": np.arange(local) < len(chunk),
            "index": np.concatenate([chunk, -np.ones((pad,), np.int64)]),
        }


def make_transform(aug_config) -> Transform | None:
    """The training augmentation named by `config.data.augment`.

    `aug_config.kind` picks the family: 'cifar' (the default, also when the field is absent):
    crop with padding, flip, AutoAugment, rotation for fixed-size images, None when all are off;
    'imagenet': random resized crop to `crop_size` (`crop_scale`, `crop_ratio`), flip,
    `color_jitter` and optional RandAugment (`randaugment`, `randaugment_ops`,
    `randaugment_magnitude`, `randaugment_magnitude_std`) for images of any size.
    """
    kind = aug_config.get("kind", "cifar")
    if kind == "imagenet":
        return augment_imagenet.make_train_transform(
            crop_size=aug_config.crop_size, scale=aug_config.crop_scale,
            ratio=aug_config.crop_ratio, flip=aug_config.flip,
            color_jitter_strength=aug_config.color_jitter, randaugment=aug_config.randaugment,
            randaugment_ops=aug_config.randaugment_ops,
            randaugment_magnitude=aug_config.randaugment_magnitude,
            randaugment_magnitude_std=aug_config.randaugment_magnitude_std)
    if kind != "cifar":
        raise ValueError(f"config.data.augment.kind={kind!r}; expected 'cifar' or 'imagenet'")
    if not (aug_config.crop_padding or aug_config.flip or aug_config.rotation
            or aug_config.autoaugment):
        return None
    return augment_lib.make_train_transform(
        crop_padding=aug_config.crop_padding, flip=aug_config.flip,
        rotation=aug_config.rotation, autoaugment=aug_config.autoaugment)
