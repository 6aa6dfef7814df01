"""A class-balanced expert's view of a dataset: its classes plus one reject class.

The class-balanced experts (Sharma et al., GCPR 2020; `ltx.methods.cbe`) train one classifier per
shot group (many, medium, few). Each expert sees its own classes, relabelled 0..K-1 in ascending
global class id, and images of all other classes under one extra label K, the reject ("open")
class, last. `apply(config.data, dataset)` (the method's `dataset_view`, called on the dataset of
every `cbe` run) turns it into that expert view when the config asks for one:

- `data.expert_classes`: tuple of global class ids, or `data.expert_group` ('many', 'medium',
  'few') resolved at build time from the training counts with `data.expert_shot_convention`
  ('cbe': n >= 100 / 20 <= n < 100 / n < 20, the official thresholds). Both empty: the usual
  dataset (the baseline). Resolving at build time keeps the groups right when the imbalance ratio
  or the list files are overridden on the command line.
- `data.reject` True (the official code): training set = every image of the expert's classes plus
  floor(n_in / open_ratio) images of the other classes, drawn once with `data.reject_seed`
  (`ltx.methods.cbe.loss.reject_undersample`; the official draw follows `seed_everything(5021)` and
  cannot be reproduced bit for bit). `data.open_ratio` r: 16 on ImageNet-LT, 16 / 8 / 8 on
  Places-LT; -1 is the official 1:n option (as many reject images as an average expert class).
- `data.reject` False (outlier exposure): every training image is kept (no undersampling; the
  open ratio is not used), with the same labels: the loss (`ltx.methods.cbe`) reads label K as
  "not mine" and the model's last output is never trained.
- val: the expert's val images plus as many drawn from the other classes (open ratio 1, as the
  official val loader); test: every test image, the other classes labelled K.

Relabelling: `Split.labels` get the local labels, and the record source is wrapped in a
`RelabeledSource`, because the input pipeline reads `record['label']` from the source. The
wrapper maps a record's global label through a [C] table, so it works for any index and stays
picklable for grain's worker processes.

The result is an `ExpertDataset`: a `Dataset` with K + 1 classes (`class_counts` over K + 1, the
reject count last) that also records the expert's global classes and the global counts, which
the fusion (`ltx.methods.cbe.finish.fuse_stages`) needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ltx.data import shots, splits
from ltx.methods.cbe.loss import reject_undersample

GROUPS = shots.GROUP_NAMES  # ('many', 'medium', 'few')
DEFAULT_OPEN_RATIO = 16
DEFAULT_REJECT_SEED = 5021  # The official --seed.


class RelabeledSource(Sequence):
    """A record source whose labels go through a table: `record['label'] -> table[label]`.

    Attributes:
      source: the wrapped random-access source of `{'image', 'label', ...}` records.
      table: int64 [C], the new label of every global class.
    """

    def __init__(self, source: Sequence, table: np.ndarray):
        self.source = source
        self.table = np.asarray(table, np.int64)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = dict(self.source[index])
        record["label"] = self.table[int(record["label"])]
        return record

    def __repr__(self) -> str:
        return f"RelabeledSource({self.source!r}, num_classes={int(self.table.max()) + 1})"


@dataclasses.dataclass(frozen=True)
class ExpertDataset(splits.Dataset):
    """An expert's dataset: `num_classes` = K + 1 (reject class last), local labels.

    Extra attributes:
      expert_classes: the K global class ids, ascending; local label k is expert_classes[k].
      global_num_classes: C of the underlying dataset.
      global_class_counts: int [C] training counts of the underlying dataset.
      reject: True for the reject-class expert, False for outlier exposure.
      open_ratio: the configured undersampling ratio (-1: 1:n; unused for outlier exposure).
      train_open_ratio: n_in / n_reject of the training split as drawn, the r of the reject
        logit correction when open_ratio is -1 (inf when no reject image was drawn).
    """

    expert_classes: tuple[int, ...] = ()
    global_num_classes: int = 0
    global_class_counts: np.ndarray | None = None
    reject: bool = True
    open_ratio: int = DEFAULT_OPEN_RATIO
    train_open_ratio: float = float(DEFAULT_OPEN_RATIO)

    @property
    def expert_mask(self) -> np.ndarray:
        """bool [C], True on the expert's global classes."""
        mask = np.zeros(self.global_num_classes, bool)
        mask[list(self.expert_classes)] = True
        return mask

    @property
    def fusion_open_ratio(self) -> float:
        """The r of `reject_logit_correction`: the configured ratio, or the drawn one for -1."""
        return float(self.open_ratio) if self.open_ratio > 0 else float(self.train_open_ratio)


def label_table(expert_classes, num_classes: int) -> np.ndarray:
    """int64 [C]: the rank of each expert class among `expert_classes`, K for every other."""
    classes = np.asarray(expert_classes, np.int64)
    table = np.full(num_classes, classes.size, np.int64)
    table[np.sort(classes)] = np.arange(classes.size)
    return table


def _int_tuple(value, name: str) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value,)
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"config.data.{name}={tuple(values)!r} holds {v!r}; expected "
                             "integer class ids")
        out.append(int(v))
    return tuple(out)


DATA_FIELDS = ("expert_classes", "expert_group", "expert_shot_convention", "open_ratio",
               "reject", "reject_seed")


def _check_fields(data_config) -> None:
    missing = [f"config.data.{k}" for k in DATA_FIELDS if k not in data_config]
    if missing:
        raise ValueError(f"the class-balanced experts' config lacks {missing}; build it with "
                         "ltx.methods.cbe.config.configure (or add_data_fields)")


def expert_classes(data_config, class_counts) -> tuple[int, ...] | None:
    """The expert's global classes from `config.data` and the training counts, or None.

    `data.expert_classes` (explicit ids) or `data.expert_group` with
    `data.expert_shot_convention`; None when neither is set (the usual, all-class dataset).

    Raises:
      ValueError naming the bad value: both set, ids out of [0, C) or repeated, all C classes
      (nothing left for the reject class), an unknown group, or a group with no class.
    """
    _check_fields(data_config)
    counts = np.asarray(class_counts)
    num_classes = counts.size
    explicit = _int_tuple(data_config.expert_classes or (), "expert_classes")
    group = data_config.expert_group or ""
    if explicit and group:
        raise ValueError(f"config.data.expert_classes={explicit} and config.data.expert_group="
                         f"{group!r} are both set; expected one of them")
    if group:
        if group not in GROUPS:
            raise ValueError(f"config.data.expert_group={group!r}; expected one of {GROUPS} "
                             "(or '' for all classes)")
        convention = data_config.expert_shot_convention
        mask = shots.shot_masks(counts, convention)[group]
        if not mask.any():
            raise ValueError(f"config.data.expert_group={group!r} has no class under the "
                             f"{convention!r} shot convention for training counts "
                             f"{counts.tolist()[:12]}{' ...' if num_classes > 12 else ''}")
        explicit = tuple(int(c) for c in np.flatnonzero(mask))
    if not explicit:
        return None
    bad = [c for c in explicit if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"config.data.expert_classes contains {bad[0]}; expected class ids in "
                         f"[0, {num_classes})")
    if len(set(explicit)) != len(explicit):
        repeated = sorted({c for c in explicit if explicit.count(c) > 1})
        raise ValueError(f"config.data.expert_classes repeats {repeated}; expected distinct ids")
    if len(explicit) == num_classes:
        raise ValueError(f"config.data.expert_classes lists all {num_classes} classes, leaving "
                         "no image for the reject class; leave it empty for the all-class dataset")
    return tuple(sorted(explicit))


def check_open_ratio(value) -> int:
    """`data.open_ratio` as an int >= 1 or -1, else ValueError naming the value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not (
            value >= 1 or value == -1):
        raise ValueError(f"config.data.open_ratio={value!r}; expected a positive int (training "
                         "images of the expert per reject image, 16 officially) or -1 (1:n: as "
                         "many reject images as an average expert class)")
    return int(value)


def _relabel(split: splits.Split, positions: np.ndarray, table: np.ndarray) -> splits.Split:
    positions = np.asarray(positions, np.int64)
    return splits.Split(source=RelabeledSource(split.source, table),
                        indices=np.asarray(split.indices)[positions],
                        labels=table[np.asarray(split.labels)[positions]])


def expert_dataset(dataset: splits.Dataset, classes, *, reject: bool = True,
                   open_ratio: int = DEFAULT_OPEN_RATIO,
                   seed: int = DEFAULT_REJECT_SEED) -> ExpertDataset:
    """The expert view of `dataset` for the global `classes` (see the module docstring).

    Args:
      dataset: the all-class dataset (global labels).
      classes: the expert's K global class ids (any order; stored ascending), 1 <= K < C.
      reject: reject-class expert (undersampled others) or outlier exposure (all images).
      open_ratio: positive int or -1; the training split's reject undersampling.
      seed: the draw of the reject images (train and val draw from independent streams).
    """
    num_classes = dataset.num_classes
    classes = tuple(sorted(int(c) for c in classes))
    mask = np.zeros(num_classes, bool)
    mask[list(classes)] = True
    if not 0 < mask.sum() < num_classes:
        raise ValueError(f"expert classes {classes}; expected between 1 and {num_classes - 1} of "
                         f"the {num_classes} classes")
    open_ratio = check_open_ratio(open_ratio)
    table = label_table(classes, num_classes)
    size = len(classes)
    train_labels = np.asarray(dataset.train.labels)
    if reject:
        train_positions = reject_undersample(train_labels, mask, open_ratio=open_ratio,
                                             seed=np.random.default_rng([seed, 0]))
    else:
        train_positions = np.arange(train_labels.size)
    train = _relabel(dataset.train, train_positions, table)
    val = None
    if dataset.val is not None:
        val_positions = reject_undersample(np.asarray(dataset.val.labels), mask, open_ratio=1,
                                           seed=np.random.default_rng([seed, 1]))
        val = _relabel(dataset.val, val_positions, table)
    test = _relabel(dataset.test, np.arange(len(dataset.test)), table)
    counts = splits.counts_from_labels(train.labels, size + 1)
    inside, outside = int(counts[:size].sum()), int(counts[size])
    return ExpertDataset(
        name=dataset.name, num_classes=size + 1, image_shape=dataset.image_shape,
        mean=dataset.mean, std=dataset.std, train=train, val=val, test=test,
        class_counts=counts, eval_transform=dataset.eval_transform,
        expert_classes=classes, global_num_classes=num_classes,
        global_class_counts=np.asarray(dataset.class_counts), reject=bool(reject),
        open_ratio=open_ratio,
        train_open_ratio=inside / outside if outside else float("inf"))


def apply(data_config, dataset: splits.Dataset) -> splits.Dataset:
    """`dataset` itself, or its expert view when `config.data` names expert classes."""
    classes = expert_classes(data_config, dataset.class_counts)
    if classes is None:
        return dataset
    reject = data_config.reject
    if not isinstance(reject, (bool, np.bool_)):
        raise ValueError(f"config.data.reject={reject!r}; expected True (reject class) or False "
                         "(outlier exposure)")
    return expert_dataset(dataset, classes, reject=bool(reject),
                          open_ratio=data_config.open_ratio, seed=int(data_config.reject_seed))
