"""CIFAR-10-LT and CIFAR-100-LT, from the official tarballs prepared once by `ltx-prepare`.

    ltx-prepare cifar100 --tarball=cifar-100-python.tar.gz     # or cifar-100-binary.tar.gz
    ltx-train --config=configs/cifar100_lt_balpoe.py --workdir=...

`prepare` reads either version of the tarball the CIFAR site publishes (the python pickles or the
binary records, https://www.cs.toronto.edu/~kriz/cifar.html) and writes, under the data directory
(`config.data.data_dir`, else $LTX_DATA_DIR, else ~/ltx_data), a folder `cifar10/` or
`cifar100/` with `train_images.npy` uint8 [50000, 32, 32, 3], `train_labels.npy` int64 [50000],
the same for `test` (10,000) and `info.json` (the tarball's name and SHA-256, the counts). Reading
needs neither TensorFlow nor a network, and nothing is ever downloaded: a missing dataset fails at
once with the command that prepares it.

The images keep the tarball's order (CIFAR-10's data_batch_1 ... data_batch_5; CIFAR-100's
`train`), which is the order of torchvision's CIFAR datasets. The long-tailed training set is
then chosen exactly as the references' IMBALANCECIFAR (LDAM-DRW, RIDE, SADE and BalPoE) choose it:
`long_tail_counts` images per class, the first ones of each class's indices after a seed-0
shuffle (`long_tail_indices`): 10,847 images for CIFAR-100 at ratio 100. The test set is the
balanced 10,000-image test split; the references validate on it, so `val` is None.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np

from ltx import files
from ltx.data import augment, long_tail, splits

# ltx dataset name -> (folder / tarball family, number of classes).
NAMES = {"cifar10_lt": ("cifar10", 10), "cifar100_lt": ("cifar100", 100)}
TARBALLS = {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"),
            "cifar100": ("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz")}
URL = "https://www.cs.toronto.edu/~kriz/"
# The published SHA-256 of each official tarball: the python versions as Keras pins them
# (keras/src/datasets/cifar10.py and cifar100.py, `file_hash`), the binary versions as TFDS
# does (tensorflow_datasets' url_checksums, from which `tfds build cifar10` downloads).
OFFICIAL_SHA256 = {
    "cifar-10-python.tar.gz":
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    "cifar-10-binary.tar.gz":
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    "cifar-100-python.tar.gz":
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    "cifar-100-binary.tar.gz":
        "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
}
ACCEPT_FLAG = "--accept_unofficial_tarball"
DATA_DIR_ENV = "LTX_DATA_DIR"
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy",
         "info.json")

# Members of each tarball version: {split: [member paths in order]} and the record layout.
_PYTHON_MEMBERS = {
    "cifar10": {"train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
                "test": ["cifar-10-batches-py/test_batch"]},
    "cifar100": {"train": ["cifar-100-python/train"], "test": ["cifar-100-python/test"]},
}
_BINARY_MEMBERS = {
    "cifar10": {"train": [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
                "test": ["cifar-10-batches-bin/test_batch.bin"]},
    "cifar100": {"train": ["cifar-100-binary/train.bin"], "test": ["cifar-100-binary/test.bin"]},
}
# The member holding the class names, per version: a pickled dict (its key) or a text file with
# one name per line.
_PYTHON_META = {"cifar10": ("cifar-10-batches-py/batches.meta", b"label_names"),
                "cifar100": ("cifar-100-python/meta", b"fine_label_names")}
_BINARY_META = {"cifar10": "cifar-10-batches-bin/batches.meta.txt",
                "cifar100": "cifar-100-binary/fine_label_names.txt"}
# Bytes before the 3,072 pixels of a binary record, and which of them is the (fine) label.
_BINARY_LABEL = {"cifar10": (1, 0), "cifar100": (2, 1)}
_PIXELS = 3 * 32 * 32


def default_data_dir() -> str:
    """$LTX_DATA_DIR, else ~/ltx_data: where `ltx-prepare` writes and the CIFAR configs read
    when `config.data.data_dir` is empty."""
    return files.expand(os.environ.get(DATA_DIR_ENV) or "~/ltx_data")


def family(name: str) -> str:
    """'cifar10' or 'cifar100' of a dataset name ('cifar100_lt', 'cifar100', ...)."""
    base = name[:-3] if name.endswith("_lt") else name
    if base not in TARBALLS:
        raise ValueError(f"dataset {name!r}; expected one of {sorted(TARBALLS)} (or their "
                         "'_lt' names)")
    return base


def prepare_command(name: str, data_dir: str | None = None) -> str:
    """The command that prepares `name` (into `data_dir` if it is not the default)."""
    base = family(name)
    target = "" if not data_dir or files.expand(data_dir) == default_data_dir() else (
        f" --data_dir={data_dir}")
    return (f"ltx-prepare {base} --tarball=<path to {TARBALLS[base][0]} or "
            f"{TARBALLS[base][1]}>{target}   (the tarball: {URL}{TARBALLS[base][0]})")


# -- reading the tarballs ---------------------------------------------------------------------

class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches without running arbitrary code: only the NumPy array and
    dtype constructors that the published pickles use are allowed."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                                                            "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("copyreg", "_reconstructor"),
                ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"the CIFAR batch refers to {module}.{name}, which "
                                         "no published CIFAR pickle does")
        return super().find_class(module, name)


def _images(rows: np.ndarray) -> np.ndarray:
    """uint8 [N, 3072] rows (1,024 red, green, blue values each, row-major) -> [N, 32, 32, 3]."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _read_python(tar: tarfile.TarFile, member: str, base: str):
    batch = _CifarUnpickler(tar.extractfile(member), encoding="bytes").load()
    key = b"labels" if base == "cifar10" else b"fine_labels"
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        raise ValueError(f"{member} has no {key!r} and b'data' entries; not a CIFAR batch")
    rows = np.asarray(batch[b"data"], np.uint8)
    if rows.ndim != 2 or rows.shape[1] != _PIXELS:
        raise ValueError(f"{member}: data has shape {rows.shape}; expected [N, {_PIXELS}]")
    return _images(rows), np.asarray(batch[key], np.int64)


def _read_binary(tar: tarfile.TarFile, member: str, base: str):
    prefix, label_at = _BINARY_LABEL[base]
    raw = np.frombuffer(tar.extractfile(member).read(), np.uint8)
    size = prefix + _PIXELS
    if raw.size % size:
        raise ValueError(f"{member} has {raw.size} bytes, not a multiple of the {size}-byte "
                         "CIFAR record")
    records = raw.reshape(-1, size)
    return _images(records[:, prefix:]), records[:, label_at].astype(np.int64)


def read_tarball(path: str, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images uint8 [N, 32, 32, 3], labels int64 [N]), 'test': (...), 'classes':
    the class names in label order (None if the tarball lists none)} of a CIFAR tarball of
    either version, in the tarball's order."""
    base = family(name)
    num_classes = NAMES[f"{base}_lt"][1]
    try:
        handle = files.open(path, "rb")
    except OSError as err:
        raise ValueError(f"{path} is not a readable tarball ({err})") from None
    try:
        tar = tarfile.open(fileobj=handle, mode="r:*")
    except (tarfile.TarError, OSError) as err:
        handle.close()
        raise ValueError(f"{path} is not a readable tarball ({err})") from None
    with handle, tar:
        present = set(tar.getnames())
        for members, reader in ((_PYTHON_MEMBERS[base], _read_python),
                                (_BINARY_MEMBERS[base], _read_binary)):
            wanted = [m for split in members.values() for m in split]
            if all(m in present for m in wanted):
                break
        else:
            raise ValueError(
                f"{path} is not a {base} tarball: it has neither "
                f"{_PYTHON_MEMBERS[base]['train'][0]!r} nor {_BINARY_MEMBERS[base]['train'][0]!r}"
                f" (expected {TARBALLS[base][0]} or {TARBALLS[base][1]})")
        result = {}
        for split, names in members.items():
            parts = [reader(tar, member, base) for member in names]
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f"{path}: {split} labels outside [0, {num_classes})")
            result[split] = (images, labels)
        result["classes"] = _class_names(tar, base, num_classes,
                                         binary=reader is _read_binary)
    return result


def _class_names(tar: tarfile.TarFile, base: str, num_classes: int, *, binary: bool
                 ) -> list[str] | None:
    """The class names that the tarball's meta member lists, in label order; None without one
    (or with another number of names)."""
    present = set(tar.getnames())
    if binary:
        member = _BINARY_META[base]
        if member not in present:
            return None
        names = tar.extractfile(member).read().decode("utf-8", "replace").split("\n")
    else:
        member, key = _PYTHON_META[base]
        if member not in present:
            return None
        meta = _CifarUnpickler(tar.extractfile(member), encoding="bytes").load()
        names = meta.get(key, []) if isinstance(meta, dict) else []
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
                 for n in names]
    names = [n.strip() for n in names if n.strip()]
    return names if len(names) == num_classes else None


# -- preparing --------------------------------------------------------------------------------

def find_tarball(name: str, data_dir: str | None = None) -> str | None:
    """The first tarball of `name` found in the usual places: `<data_dir>/downloads/manual/`,
    `<data_dir>/`, TFDS's manual folder (~/tensorflow_datasets/downloads/manual) and the current
    folder."""
    base = family(name)
    folders = [files.join(data_dir or default_data_dir(), "downloads", "manual"),
               data_dir or default_data_dir(),
               files.expand("~/tensorflow_datasets/downloads/manual"), os.getcwd()]
    for folder in folders:
        for tarball in TARBALLS[base]:
            path = files.join(folder, tarball)
            if files.isfile(path):
                return path
    return None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with files.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_npy(path: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    files.write_text(path, buffer.getvalue())


def _load_npy(path: str) -> np.ndarray:
    if files.is_local(path):
        return np.load(path)
    return np.load(io.BytesIO(files.read_bytes(path)))


class UnofficialTarballError(ValueError):
    """A tarball whose SHA-256 is none of the published ones."""


def check_official(tarball: str, name: str, digest: str | None = None) -> str:
    """The SHA-256 of `tarball` if it is one of the published `name` tarballs (`OFFICIAL_SHA256`),
    else UnofficialTarballError naming both digests and the flag that accepts it anyway."""
    base = family(name)
    digest = digest or _sha256(tarball)
    official = {n: OFFICIAL_SHA256[n] for n in TARBALLS[base]}
    if digest not in official.values():
        expected = " or ".join(f"{n} ({h})" for n, h in official.items())
        raise UnofficialTarballError(
            f"{tarball} has SHA-256 {digest}, which is not that of the official {expected} "
            f"published at {URL}{TARBALLS[base][0]}: it is damaged, truncated or not the "
            f"official CIFAR data, and runs on it are not comparable with the papers'. Download "
            f"it again, or pass {ACCEPT_FLAG} to prepare it anyway (e.g. a dataset of your own "
            "in CIFAR's format)")
    return digest


def prepare(name: str, tarball: str | None = None, data_dir: str | None = None, *,
            official_only: bool = False) -> str:
    """Writes `<data_dir>/<cifar10|cifar100>/` from the official tarball; returns the folder.

    The folder appears whole or not at all (written beside it, then renamed), so a prepare that
    is interrupted leaves no half-written dataset. info.json records the tarball's SHA-256,
    whether it is a published one ('official') and the class names the tarball lists. Raises
    FileNotFoundError (no tarball given or found, naming where it looked), ValueError (not a
    CIFAR tarball of this kind) or, with `official_only` (what `ltx-prepare` passes unless
    --accept_unofficial_tarball), UnofficialTarballError for any tarball but the published ones;
    Python callers that build a small CIFAR-format dataset (`write_tarball`) leave it False.
    """
    base = family(name)
    data_dir = files.expand(data_dir or default_data_dir())
    if tarball is None:
        tarball = find_tarball(base, data_dir)
        if tarball is None:
            raise FileNotFoundError(
                f"no {TARBALLS[base][0]} or {TARBALLS[base][1]} in {data_dir}/downloads/manual, "
                f"{data_dir}, ~/tensorflow_datasets/downloads/manual or the current folder; "
                f"download it from {URL}{TARBALLS[base][0]} and pass --tarball=<path>")
    if not files.isfile(tarball):
        raise FileNotFoundError(f"--tarball={tarball!r} is not a file")
    digest = _sha256(tarball)
    if official_only:
        check_official(tarball, base, digest)
    splits_read = read_tarball(tarball, base)
    class_names = splits_read.pop("classes")
    folder = files.join(data_dir, base)
    staging = f"{folder}.preparing-{os.getpid()}"
    files.rmtree(staging)
    files.makedirs(staging)
    try:
        counts = {}
        for split, (images, labels) in splits_read.items():
            _save_npy(files.join(staging, f"{split}_images.npy"), images)
            _save_npy(files.join(staging, f"{split}_labels.npy"), labels)
            counts[split] = int(labels.size)
        info = {"dataset": base, "tarball": files.basename(tarball), "sha256": digest,
                "official": digest in OFFICIAL_SHA256.values(), "counts": counts,
                "order": "the tarball's (torchvision's CIFAR order)", "classes": class_names}
        files.write_json(files.join(staging, "info.json"), info, sort_keys=False)
        if files.isdir(folder):
            files.rmtree(folder)
        files.rename(staging, folder)
    except BaseException:
        files.rmtree(staging)
        raise
    return folder


def require_prepared(name: str, data_dir: str | None) -> str:
    """The prepared folder of `name` under `data_dir` (default: `default_data_dir()`), or
    FileNotFoundError at once with the command that prepares it."""
    base = family(name)
    root = files.expand(data_dir) if data_dir else default_data_dir()
    folder = files.join(root, base)
    missing = [f for f in FILES if not files.isfile(files.join(folder, f))]
    if missing:
        where = ("config.data.data_dir is empty, so ltx looked in the default data directory "
                 f"{root} (${DATA_DIR_ENV} or ~/ltx_data)" if not data_dir else
                 f"config.data.data_dir={data_dir!r}")
        raise FileNotFoundError(
            f"{base} is not prepared: {folder} lacks {', '.join(missing)}; {where}. Prepare it "
            f"once (offline, from the official tarball):\n  {prepare_command(base, data_dir)}")
    return folder


def load_prepared(name: str, data_dir: str | None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'test': (...)} of a prepared CIFAR folder."""
    folder = require_prepared(name, data_dir)
    result = {}
    for split in ("train", "test"):
        try:
            images = _load_npy(files.join(folder, f"{split}_images.npy"))
            labels = _load_npy(files.join(folder, f"{split}_labels.npy"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{folder} is damaged ({err}); prepare it again:\n  "
                             f"{prepare_command(name, data_dir)}") from None
        result[split] = (images, labels)
    return result


def class_names(name: str, data_dir: str | None) -> list[str] | None:
    """The class names of a prepared CIFAR folder (from its tarball's meta member), or None
    when it records none (a folder prepared before ltx kept them, or a tarball without
    them). Reads only info.json."""
    folder = files.join(files.expand(data_dir) if data_dir else default_data_dir(),
                        family(name))
    path = files.join(folder, "info.json")
    if not files.isfile(path):
        return None
    names = files.read_json(path).get("classes")
    return list(names) if names else None


def cifar_lt(
    name: str = "cifar100_lt",
    *,
    data_dir: str | None,
    imbalance_ratio: float = 100.0,
    profile: str = "exp",
    subset_seed: int = 0,
) -> splits.Dataset:
    """Builds CIFAR-10-LT or CIFAR-100-LT from the prepared folder.

    Args:
      name: 'cifar10_lt' or 'cifar100_lt'.
      data_dir: the data directory holding `cifar10/` or `cifar100/`; empty or None for
        `default_data_dir()`.
      imbalance_ratio: 100, 50, 10, ... (the references' imb_factor is its inverse).
      profile: 'exp' (the papers' default) or 'step'.
      subset_seed: the reference's `rand_number` (0).
    """
    if name not in NAMES:
        raise ValueError(f"name={name!r}; expected one of {sorted(NAMES)}")
    return long_tailed(name, load_prepared(name, data_dir), imbalance_ratio=imbalance_ratio,
                       profile=profile, subset_seed=subset_seed,
                       class_names=class_names(name, data_dir))


def long_tailed(name: str, data: dict[str, tuple[np.ndarray, np.ndarray]], *,
                imbalance_ratio: float, profile: str, subset_seed: int,
                class_names: list[str] | None = None) -> splits.Dataset:
    """The long-tailed dataset of CIFAR arrays in the tarball's order ({'train': (images uint8
    [50000, 32, 32, 3], labels [50000]), 'test': ...}, from the tarball or from TFDS).

    A ratio that leaves a class without training images (a CIFAR-format set smaller than the
    official one) raises ValueError naming the class (`class_names`, else its index) and the
    largest ratio that keeps one (`long_tail.checked_subset`)."""
    num_classes = NAMES[name][1]
    (train_images, train_labels), (test_images, test_labels) = data["train"], data["test"]
    max_per_class = len(train_labels) // num_classes
    counts = long_tail.long_tail_counts(max_per_class, num_classes, imbalance_ratio, profile)
    long_tail.warn(long_tail.checked_subset(
        np.bincount(train_labels, minlength=num_classes), counts,
        imbalance_ratio=imbalance_ratio, profile=profile, class_names=class_names,
        source=f"the {family(name)} training set"))
    train_idx = long_tail.long_tail_indices(train_labels, counts, seed=subset_seed)
    train_source = splits.ArraySource(train_images, train_labels)
    test_source = splits.ArraySource(test_images, test_labels)
    return splits.Dataset(
        name=name,
        num_classes=num_classes,
        image_shape=(32, 32, 3),
        mean=augment.CIFAR_MEAN,
        std=augment.CIFAR_STD,
        train=splits.Split(train_source, train_idx, train_labels[train_idx]),
        test=splits.Split(test_source, np.arange(len(test_labels)), test_labels),
        val=None,
        class_counts=splits.counts_from_labels(train_labels[train_idx], num_classes),
    )


def write_tarball(path: str, name: str, data: dict[str, tuple[np.ndarray, np.ndarray]], *,
                  binary: bool = False, class_names: list[str] | None = None) -> None:
    """Writes `data` ({'train': (images [N, 32, 32, 3], labels [N]), 'test': ...}) as a tarball
    in the official layout and byte format of either version: what `read_tarball` reads. For
    tests and for making a small CIFAR-format dataset; CIFAR-10's train split is cut into the 5
    data batches. `class_names` go into the version's meta member (batches.meta, meta, or its
    text file)."""
    base = family(name)
    members = (_BINARY_MEMBERS if binary else _PYTHON_MEMBERS)[base]
    with tarfile.open(path, "w:gz") as tar:
        if class_names is not None:
            if binary:
                member = _BINARY_META[base]
                payload = "".join(f"{n}\n" for n in class_names).encode()
            else:
                member, key = _PYTHON_META[base]
                payload = pickle.dumps({key: [n.encode() for n in class_names]}, protocol=4)
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for split, names in members.items():
            images, labels = data[split]
            rows = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
            for member, part in zip(names, np.array_split(np.arange(len(labels)), len(names))):
                if binary:
                    prefix, label_at = _BINARY_LABEL[base]
                    records = np.zeros((len(part), prefix + _PIXELS), np.uint8)
                    records[:, label_at] = labels[part]
                    records[:, prefix:] = rows[part]
                    payload = records.tobytes()
                else:
                    key = b"labels" if base == "cifar10" else b"fine_labels"
                    batch = {b"data": rows[part], key: [int(x) for x in labels[part]]}
                    if base == "cifar100":
                        batch[b"coarse_labels"] = [0] * len(part)
                    payload = pickle.dumps(batch, protocol=4)
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
