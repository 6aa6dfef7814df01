"""List-file datasets as ArrayRecord shards of pre-resized images (`data.source='records'`).

At ImageNet scale the input, not the step, sets the speed: a full-size JPEG decodes at a few
hundred images per second per core. Stored once with the shorter side resized to what the
transforms need (256 for 224 crops), an image is several times smaller and decodes several
times faster, and ArrayRecord gives random access (a grain source, a long-tailed subset is an
index array), as the published fast loaders do (ffcv, DALI, big_vision's TFDS ArrayRecord).

    ltx-prepare records --root=/data/imagenet --list_dir=/data/ImageNet_LT \\
        --out=/data/imagenet_lt_records --shorter_side=256
    ltx-train --config=configs/imagenet_lt_balpoe.py --workdir=... \\
        --config.data.source=records --config.data.records_dir=/data/imagenet_lt_records \\
        --config.data.list_dir=/data/ImageNet_LT

`write_list` turns one list file into `<out>/<list stem>.array_record-0000k-of-0000n` shards
and `<out>/<list stem>.json` (the list's SHA-256 and line count, the records per shard, the
shorter side, the JPEG quality). Every list of `--list_dir` is written (train, val, test and the
test-agnostic forward/backward lists), so evaluation reads them as records too. A record holds
the label (int64, little-endian), the list path (length-prefixed UTF-8, for error messages) and
the re-encoded JPEG; images whose shorter side is already at most `shorter_side` keep their
size. Training and evaluation then run the same transforms on the stored images.

At load (`list_split`) the list file in `data.list_dir` must be the one the shards were
written from (same SHA-256), and each shard must hold the records its index says; otherwise
the error names the shard or list and the command that writes them again. Shards are read and
written through ArrayRecord's own file layer (a local or mounted folder).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import multiprocessing
import struct
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ltx import files
from ltx.data import image_lists, splits

FORMAT = "ltx-records-1"
_HEADER = struct.Struct("<qI")  # label, path length


def _array_record():
    try:
        from array_record.python import array_record_data_source, array_record_module
    except ImportError as err:
        raise ImportError("record files need array_record: pip install -e '.[records]'"
                          ) from err
    return array_record_module, array_record_data_source


def encode(label: int, path: str, jpeg: bytes) -> bytes:
    """One record: int64 label, uint32 path length, the path (UTF-8), the JPEG bytes."""
    name = path.encode("utf-8")
    return _HEADER.pack(int(label), len(name)) + name + jpeg


def decode_record(record: bytes) -> tuple[int, str, bytes]:
    """(label, path, JPEG bytes) of a record written by `encode`."""
    label, length = _HEADER.unpack_from(record)
    start = _HEADER.size
    return label, record[start:start + length].decode("utf-8"), record[start + length:]


def resized_jpeg(path: str, shorter_side: int, quality: int) -> bytes:
    """The image at `path` as RGB JPEG bytes, its shorter side resized (bicubic, antialiased)
    to `shorter_side` when it is longer."""
    with files.open(path, "rb") as f, Image.open(f) as pil:
        image = pil.convert("RGB")
    w, h = image.size
    if min(w, h) > shorter_side:
        scale = shorter_side / min(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _sha256_of(path: str) -> str:
    return hashlib.sha256(files.read_bytes(path)).hexdigest()


def _stem(list_path: str) -> str:
    """'ImageNet_LT_train' of '.../ImageNet_LT_train.txt'."""
    return files.basename(list_path).rsplit(".", 1)[0]


def _shard_names(stem: str, count: int) -> list[str]:
    return [f"{stem}.array_record-{k:05d}-of-{count:05d}" for k in range(count)]


def _encode_one(item) -> bytes:
    root, relative, label, shorter_side, quality = item
    path = files.join(root, relative)
    try:
        jpeg = resized_jpeg(path, shorter_side, quality)
    except (OSError, ValueError, SyntaxError) as err:
        raise OSError(f"cannot read image {path}: {err}") from err
    return encode(label, relative, jpeg)


def write_list(list_path: str, root: str, out_dir: str, *, num_classes: int,
               shorter_side: int = 256, quality: int = 95, records_per_shard: int = 10_000,
               workers: int = 0) -> dict[str, Any]:
    """Writes the records of every line of `list_path` (images under `root`) into `out_dir`;
    returns the index written beside them. `workers` > 0 decodes and resizes in that many
    processes. Each shard is written whole (a temporary name, then renamed), the index last,
    so an interrupted write leaves no index and is redone."""
    if shorter_side < 1 or not 1 <= quality <= 100 or records_per_shard < 1:
        raise ValueError(f"shorter_side={shorter_side}, quality={quality}, records_per_shard="
                         f"{records_per_shard}; expected >= 1, 1..100 and >= 1")
    writer_module, _ = _array_record()
    paths, labels, _ = image_lists.parse_list(list_path, num_classes)
    stem = _stem(list_path)
    count = max(1, -(-len(paths) // records_per_shard))
    names = _shard_names(stem, count)
    files.makedirs(out_dir)
    items = [(root, p, int(l), shorter_side, quality) for p, l in zip(paths, labels)]
    # 'spawn': forking a process that runs JAX's threads can deadlock the child.
    pool = (concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) if workers > 0 else None)
    lengths = []
    try:
        for k, name in enumerate(names):
            chunk = items[k * records_per_shard:(k + 1) * records_per_shard]
            records = (pool.map(_encode_one, chunk, chunksize=64) if pool
                       else map(_encode_one, chunk))
            target = files.join(out_dir, name)
            partial = f"{target}.partial"
            writer = writer_module.ArrayRecordWriter(partial, "group_size:1")
            try:
                for record in records:
                    writer.write(record)
            finally:
                writer.close()
            if files.exists(target):
                files.remove(target)
            files.rename(partial, target)
            lengths.append(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown()
    index = {"format": FORMAT, "list": files.basename(list_path),
             "list_sha256": _sha256_of(list_path), "num_records": len(paths),
             "shards": dict(zip(names, lengths)), "shorter_side": shorter_side,
             "quality": quality}
    files.write_json(files.join(out_dir, f"{stem}.json"), index, sort_keys=False)
    return index


def prepare_command(list_dir: str, records_dir: str) -> str:
    return (f"ltx-prepare records --root=<image root> --list_dir={list_dir} "
            f"--out={records_dir}")


class RecordSource(Sequence):
    """Random-access records `{'image': uint8 [H, W, 3], 'label': int64}` of one list's shards.

    Picklable (the shards are opened again in each grain worker)."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray):
        self.paths, self.labels = list(paths), np.asarray(labels, np.int64)
        self._source = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}

    def _open(self):
        if self._source is None:
            self._source = _array_record()[1].ArrayRecordDataSource(self.paths)
        return self._source

    def __getitem__(self, index: int) -> dict[str, Any]:
        _, path, jpeg = decode_record(self._open()[int(index)])
        try:
            with Image.open(io.BytesIO(jpeg)) as pil:
                image = np.asarray(pil.convert("RGB"), np.uint8)
        except (OSError, ValueError, SyntaxError) as err:
            raise OSError(f"record {index} ({path}) of {self.paths[0]}...: {err}") from err
        return {"image": image, "label": self.labels[index]}

    def __repr__(self) -> str:
        return f"RecordSource({len(self.paths)} shard(s), num_records={len(self)})"


def list_split(records_dir: str, list_path: str, num_classes: int) -> splits.Split:
    """The split of `list_path` read from its records in `records_dir` (checked against the
    list and the shards' index; the labels are the list's)."""
    stem = _stem(list_path)
    index_path = files.join(records_dir, f"{stem}.json")
    list_dir = files.dirname(list_path)
    again = prepare_command(list_dir or ".", records_dir)
    if not files.isfile(index_path):
        raise FileNotFoundError(f"{index_path} does not exist: no records of {list_path} in "
                                f"config.data.records_dir={records_dir!r}; write them:\n  "
                                f"{again}")
    index = files.read_json(index_path)
    if index.get("format") != FORMAT:
        raise ValueError(f"{index_path} is not an ltx record index (format "
                         f"{index.get('format')!r}, expected {FORMAT!r}); write it again:\n  "
                         f"{again}")
    _, labels, _ = image_lists.parse_list(list_path, num_classes)
    if _sha256_of(list_path) != index["list_sha256"]:
        raise ValueError(f"{list_path} is not the list the records in {records_dir} were "
                         f"written from (its SHA-256 differs from {index_path}'s); write them "
                         f"again:\n  {again}")
    _, reader = _array_record()
    paths = []
    for name, expected in index["shards"].items():
        path = files.join(records_dir, name)
        if not files.isfile(path):
            raise FileNotFoundError(f"shard {path} of {index_path} is missing; write the "
                                    f"records again:\n  {again}")
        try:
            found = len(reader.ArrayRecordDataSource([path]))
        except Exception as err:  # noqa: BLE001 (array_record raises RuntimeError and others)
            raise ValueError(f"shard {path} cannot be read ({err}); write the records "
                             f"again:\n  {again}") from err
        if found != expected:
            raise ValueError(f"shard {path} holds {found} records, its index {index_path} "
                             f"says {expected}; write the records again:\n  {again}")
        paths.append(path)
    source = RecordSource(paths, labels)
    return splits.Split(source, np.arange(len(labels)), labels)
