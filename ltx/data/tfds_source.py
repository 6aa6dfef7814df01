"""Datasets prepared by TFDS, read as ArrayRecord without TensorFlow (`data.source='tfds'`).

The JAX research stack keeps its data as TFDS datasets prepared once (often into a bucket).
`tfds.data_source` reads a dataset prepared in the ArrayRecord format by random access, with
neither TensorFlow nor a network, so ltx reads records through it and decodes each image with
Pillow, exactly as it decodes a list file's JPEG. The extra: `pip install -e '.[tfds]'`.

    ltx-train --config=configs/cifar100_lt_balpoe.py --workdir=gs://bucket/run \\
        --config.data.source=tfds --config.data.tfds_data_dir=gs://bucket/tensorflow_datasets

Which records form each split:
- CIFAR-10/100-LT (`cifar10`, `cifar100`): every record's `id` ('train_16399') is its position
  in the original tarball, so the records are put back in the tarball's order and the
  long-tailed subset is chosen exactly as from the tarball (`ltx.data.cifar`): the same images,
  in the same order, as `ltx-prepare`'s path. The whole set is decoded into memory (as there).
- ImageNet-LT, iNaturalist 2018, Places-LT and any list-file dataset: with `data.list_dir`
  set, every line of the official list files (train, val, test, and the test-agnostic
  forward/backward lists) is joined to the TFDS record of the same image, by the feature that
  names its file (`KEY_FEATURES`: `imagenet_lt`/`imagenet2012` `file_name`, `places365_small`
  `filename`, `i_naturalist2018` `id`); the labels are the lists'. Without lists, the datasets
  whose TFDS splits are already the long-tailed ones are read as they are (`DIRECT_SPLITS`:
  `imagenet_lt` train/validation/test with its builder's official lists; `i_naturalist2018`
  train, and validation as the test split as the references use it) and any other TFDS image
  classification dataset (`data.name='list_files'`, `data.tfds_name='food101'`) gives its train
  split, made long-tailed by `data.imbalance_ratio` like a list-file dataset, and its test (or
  validation) split.
- The join needs every record's file name and label. Reading them is one pass over the split
  with image decoding skipped, stored once per dataset version and split under
  `$LTX_CACHE_DIR/tfds_index` (default ~/.cache/ltx/tfds_index) and reused while the split's
  record count is unchanged.

On several hosts every host opens the same source and reads only the records of its own slots
of each batch (`ltx.data.pipeline`), as for list files.
"""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ltx import files
from ltx.data import image_lists, splits

# ltx dataset name -> the TFDS dataset read by default.
TFDS_NAMES = {"cifar10_lt": "cifar10", "cifar100_lt": "cifar100", "imagenet_lt": "imagenet_lt",
              "inaturalist2018": "i_naturalist2018", "places_lt": "places365_small"}

# TFDS dataset -> the feature naming an example's image file, for joining with list files.
KEY_FEATURES = {"imagenet_lt": "file_name", "imagenet2012": "file_name",
                "places365_small": "filename", "i_naturalist2018": "id"}

# TFDS dataset -> (train, val, test) TFDS splits that already form its long-tailed splits.
DIRECT_SPLITS = {"imagenet_lt": ("train", "validation", "test"),
                 "i_naturalist2018": ("train", None, "validation")}

CACHE_ENV = "LTX_CACHE_DIR"

# Leading folders of Places365 paths (the archives' and the lists'), dropped before joining.
_PLACES_PREFIXES = ("data_256", "val_256", "test_256", "train", "val", "test")


def _tfds():
    """The tensorflow_datasets module, or ImportError with the command that installs it."""
    try:
        import tensorflow_datasets as tfds  # Optional dependency (the 'tfds' extra).
    except ImportError as err:
        raise ImportError("config.data.source='tfds' needs tensorflow-datasets (and "
                          "array_record), without TensorFlow: pip install -e '.[tfds]'"
                          ) from err
    return tfds


def join_key(tfds_name: str, path: str) -> str:
    """The key of an image path (a list file's, or a TFDS record's file-name feature) under
    which the two are joined: the file name for ImageNet, the file name without extension for
    iNaturalist (TFDS's `id`), the path below the split folder for Places365."""
    path = path.replace("\\", "/")
    if tfds_name == "i_naturalist2018":
        return os.path.basename(path).split(".")[0]
    if tfds_name == "places365_small":
        parts = [p for p in path.split("/") if p]
        if len(parts) > 1 and parts[0] in _PLACES_PREFIXES:
            parts = parts[1:]
        return "/".join(parts)
    return os.path.basename(path)


def builder(tfds_name: str, data_dir: str | None):
    """The TFDS builder of a prepared dataset (`tfds_name` may carry ':version').

    Raises FileNotFoundError naming the command that prepares it when `data_dir` holds no
    prepared version, and ImportError when array_record is missing.
    """
    tfds = _tfds()
    try:
        import array_record  # noqa: F401  (tfds.data_source reads through it)
    except ImportError as err:
        raise ImportError("config.data.source='tfds' reads ArrayRecord files, which needs "
                          "array_record: pip install -e '.[tfds]'") from err
    where = data_dir or "TFDS's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    name, _, version = tfds_name.partition(":")
    prepare = (f"prepare it once where TensorFlow is installed (not needed at train time): "
               f"tfds build {name} --file_format=array_record"
               + (f" --data_dir={data_dir}" if data_dir else ""))
    folder = files.join(data_dir or os.environ.get("TFDS_DATA_DIR")
                        or files.expand("~/tensorflow_datasets"), name)
    versions = ([v for v in files.listdir(folder) if v[:1].isdigit()]
                if files.isdir(folder) else [])
    if not versions:
        raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {where} (no "
                                f"{folder}/<version>); {prepare}")
    if version and version not in versions:
        raise FileNotFoundError(f"TFDS dataset {name!r} has version(s) {versions} in {where}, "
                                f"not the {version} that config.data.tfds_name asks for; "
                                f"{prepare}")
    try:
        result = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
    except Exception as err:  # noqa: BLE001 (TFDS raises many kinds for a bad folder)
        raise FileNotFoundError(f"TFDS dataset {tfds_name!r} in {where} cannot be opened "
                                f"({err}); versions found: {versions}; {prepare}") from err
    if not result.is_prepared():
        raise FileNotFoundError(f"TFDS dataset {tfds_name!r} version {result.version} is not "
                                f"prepared in {where} (found versions {versions}); {prepare}")
    return result


def _data_source(tfds_builder, split: str):
    tfds = _tfds()
    try:
        return tfds_builder.as_data_source(
            split=split, decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"TFDS dataset {tfds_builder.name} {tfds_builder.version} split "
                         f"{split!r} cannot be read as ArrayRecord ({err}); prepare it with "
                         "--file_format=array_record (TFRecord shards need TensorFlow)"
                         ) from err


def decode(encoded: bytes) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an encoded image (PNG, JPEG), as list-file images decode."""
    with Image.open(io.BytesIO(encoded)) as pil:
        return np.asarray(pil.convert("RGB"), np.uint8)


class TfdsSource(Sequence):
    """Random-access records `{'image': uint8 [H, W, 3], 'label': int64}` of one or more splits
    of a prepared TFDS dataset, end to end in the order given.

    `labels` (int [N], optional) replaces the records' labels (a list file's). Picklable: the
    TFDS data sources are opened again in each process (grain workers).
    """

    def __init__(self, tfds_name: str, data_dir: str | None, split_names: Sequence[str],
                 labels: np.ndarray | None = None):
        self.tfds_name, self.data_dir = tfds_name, data_dir
        self.split_names = tuple(split_names)
        info = builder(tfds_name, data_dir).info
        sizes = [info.splits[s].num_examples for s in self.split_names]
        self._offsets = np.cumsum([0] + sizes)
        if labels is not None and len(labels) != self._offsets[-1]:
            raise ValueError(f"{len(labels)} labels for {self._offsets[-1]} records")
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self._sources = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sources": None}

    def _open(self):
        if self._sources is None:
            tfds_builder = builder(self.tfds_name, self.data_dir)
            self._sources = [_data_source(tfds_builder, s) for s in self.split_names]
        return self._sources

    def record(self, index: int) -> dict[str, Any]:
        """The raw record at `index` (the image still encoded)."""
        part = int(np.searchsorted(self._offsets, index, side="right")) - 1
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        return self._open()[part][int(index - self._offsets[part])]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.record(index)
        label = self.labels[index] if self.labels is not None else np.int64(record["label"])
        return {"image": decode(record["image"]), "label": label}

    def __repr__(self) -> str:
        return (f"TfdsSource({self.tfds_name!r}, splits={self.split_names}, "
                f"num_records={len(self)})")


def _cache_dir() -> str:
    return files.join(os.environ.get(CACHE_ENV) or files.expand("~/.cache/ltx"), "tfds_index")


def split_index(tfds_name: str, data_dir: str | None, split: str) -> dict[str, np.ndarray]:
    """{'label': int64 [N]} and, for datasets with a file-name feature (`KEY_FEATURES`),
    {'name': str [N]} of every record of a TFDS split, in record order. Read once with image
    decoding skipped, then kept under `$LTX_CACHE_DIR/tfds_index/<name>/<version>/<split>.npz`
    (reused while the split's record count is unchanged)."""
    tfds_builder = builder(tfds_name, data_dir)
    num = tfds_builder.info.splits[split].num_examples
    features = {"label": "label"}
    if tfds_builder.name in KEY_FEATURES:
        features["name"] = KEY_FEATURES[tfds_builder.name]
    cache = files.join(_cache_dir(), tfds_builder.name, str(tfds_builder.version),
                       f"{split}.npz")
    if files.isfile(cache):
        with np.load(io.BytesIO(files.read_bytes(cache))) as stored:
            if set(stored.files) == set(features) and len(stored["label"]) == num:
                return {f: stored[f] for f in features}
    source = _data_source(tfds_builder, split)
    columns = {f: [] for f in features}
    for start in range(0, num, 1024):
        for record in source.__getitems__(range(start, min(start + 1024, num))):
            for column, feature in features.items():
                value = record[feature]
                columns[column].append(value.decode("utf-8") if isinstance(value, bytes)
                                       else value)
    result = {"label": np.asarray(columns["label"], np.int64)}
    if "name" in columns:
        result["name"] = np.asarray(columns["name"], dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **result)
    try:
        files.write_text(cache, buffer.getvalue())
    except OSError:  # A read-only cache folder costs the next run another pass, nothing else.
        pass
    return result


# -- CIFAR ------------------------------------------------------------------------------------

def cifar_arrays(tfds_name: str, data_dir: str | None
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images uint8 [N, 32, 32, 3], labels int64 [N]), 'test': (...)} of a TFDS
    `cifar10`/`cifar100` dataset, in the original tarball's order (each record's `id`,
    'train_16399', is its position there): what `ltx.data.cifar.load_prepared` returns for the
    tarball."""
    tfds_builder = builder(tfds_name, data_dir)
    result = {}
    for split in ("train", "test"):
        source = _data_source(tfds_builder, split)
        num = len(source)
        images = np.empty((num, 32, 32, 3), np.uint8)
        labels = np.empty(num, np.int64)
        seen = np.zeros(num, bool)
        for start in range(0, num, 1024):
            records = source.__getitems__(range(start, min(start + 1024, num)))
            for record in records:
                key = record["id"].decode("utf-8") if isinstance(record["id"], bytes) else (
                    record["id"])
                prefix, _, position = key.rpartition("_")
                if prefix != split or not position.isdigit() or int(position) >= num:
                    raise ValueError(f"TFDS {tfds_name} {split} record id {key!r} is not "
                                     f"'{split}_<position>' with position < {num}")
                position = int(position)
                if seen[position]:
                    raise ValueError(f"TFDS {tfds_name} {split} has id {key!r} twice")
                seen[position] = True
                images[position] = decode(record["image"])
                labels[position] = record["label"]
        result[split] = (images, labels)
    return result


# -- list-file datasets -----------------------------------------------------------------------

class _Joiner:
    """Maps list-file paths to record positions in a `TfdsSource` over every split of a TFDS
    dataset."""

    def __init__(self, tfds_name: str, data_dir: str | None):
        tfds_builder = builder(tfds_name, data_dir)
        self.tfds_name, self.data_dir = tfds_name, data_dir
        self.base_name = tfds_builder.name
        if self.base_name not in KEY_FEATURES:
            raise ValueError(f"TFDS dataset {tfds_name!r} has no known file-name feature to "
                             f"join list files with (known: {sorted(KEY_FEATURES)}); leave "
                             "config.data.list_dir empty to read its own splits")
        self.split_names = tuple(tfds_builder.info.splits.keys())
        self.position: dict[str, int] = {}
        offset = 0
        for split in self.split_names:
            keys = split_index(tfds_name, data_dir, split)["name"]
            for i, key in enumerate(keys):
                self.position.setdefault(join_key(self.base_name, str(key)), offset + i)
            offset += len(keys)

    def split(self, list_path: str, num_classes: int) -> splits.Split:
        paths, labels, lines = image_lists.parse_list(list_path, num_classes)
        indices = np.empty(len(paths), np.int64)
        for i, path in enumerate(paths):
            found = self.position.get(join_key(self.base_name, path))
            if found is None:
                raise ValueError(
                    f"{list_path}:{lines[i]}: {path!r} has no record in TFDS dataset "
                    f"{self.tfds_name!r} (joined by {KEY_FEATURES[self.base_name]} = "
                    f"{join_key(self.base_name, path)!r}); is the list for this dataset, and "
                    "was it prepared from the complete archives?")
            indices[i] = found
        return splits.Split(_source_with_labels(self, indices, labels),
                            np.arange(len(paths)), labels)


def _source_with_labels(joiner: _Joiner, indices: np.ndarray, labels: np.ndarray):
    """A source over the joined records, in list order, with the list's labels."""
    return _Selection(TfdsSource(joiner.tfds_name, joiner.data_dir, joiner.split_names),
                      indices, labels)


class _Selection(Sequence):
    """Records `indices` of `source`, relabelled with `labels`."""

    def __init__(self, source: TfdsSource, indices: np.ndarray, labels: np.ndarray):
        self.source, self.indices, self.labels = source, indices, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.source.record(int(self.indices[index]))
        return {"image": decode(record["image"]), "label": self.labels[index]}

    def __repr__(self) -> str:
        return f"{self.source!r}[{len(self)} listed records]"


_JOINERS: dict[tuple[str, str | None], _Joiner] = {}


def list_split(tfds_name: str, data_dir: str | None, list_path: str,
               num_classes: int) -> splits.Split:
    """The split of every line of one list file, read from the TFDS dataset (e.g. a
    test-agnostic forward/backward list); a line with no record raises ValueError naming it."""
    key = (tfds_name, data_dir)
    if key not in _JOINERS:
        _JOINERS[key] = _Joiner(tfds_name, data_dir)
    return _JOINERS[key].split(list_path, num_classes)


def direct_splits(tfds_name: str, data_dir: str | None
                  ) -> tuple[splits.Split, splits.Split | None, splits.Split]:
    """(train, val or None, test) of a TFDS dataset read as it is: `DIRECT_SPLITS`, else its
    'train' split and its 'test' (or 'validation') split, no val."""
    tfds_builder = builder(tfds_name, data_dir)
    available = tuple(tfds_builder.info.splits.keys())
    names = DIRECT_SPLITS.get(tfds_builder.name)
    if names is None:
        test = "test" if "test" in available else "validation"
        names = ("train", None, test)
    result = []
    for name in names:
        if name is None:
            result.append(None)
            continue
        if name not in available:
            raise ValueError(f"TFDS dataset {tfds_name!r} has splits {list(available)}; ltx "
                             f"reads {name!r} from it")
        labels = split_index(tfds_name, data_dir, name)["label"]
        if labels.size and labels.min() < 0:
            raise ValueError(f"TFDS {tfds_name} split {name!r} has no labels (label -1)")
        source = TfdsSource(tfds_name, data_dir, (name,), labels)
        result.append(splits.Split(source, np.arange(len(labels)), labels))
    return tuple(result)


def num_classes(tfds_name: str, data_dir: str | None) -> int:
    """C of the TFDS dataset's 'label' feature."""
    return int(builder(tfds_name, data_dir).info.features["label"].num_classes)


def class_names(tfds_name: str, data_dir: str | None) -> list[str] | None:
    """The names of the TFDS dataset's 'label' feature in label order (None if it has none)."""
    names = builder(tfds_name, data_dir).info.features["label"].names
    return list(names) if names else None
