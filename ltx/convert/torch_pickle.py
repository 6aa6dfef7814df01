"""`torch.save` checkpoints read without PyTorch.

A `torch.save` file (PyTorch >= 1.6) is a zip archive `<name>/data.pkl` + `<name>/data/<key>`: a
protocol-2 pickle of the saved object whose tensors point, through persistent ids
`('storage', <storage class>, key, location, numel)`, at raw little-endian storages in the other
entries, rebuilt by `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.

`load(path)` unpickles it with `_RestrictedUnpickler`:

- the globals a tensor needs (`torch.*Storage`, `_rebuild_tensor_v2`, `_rebuild_parameter`,
  `collections.OrderedDict`, NumPy scalars) map to local functions that build NumPy arrays (any
  size, stride and offset into a storage; views of one storage share nothing afterwards);
- any other class (a trainer's `ConfigParser`, `pathlib.PosixPath`, ...) becomes an inert
  `Placeholder` that records its name, arguments and state: nothing is imported or executed;
- globals that would run code (`os.system`, `builtins.eval`, `subprocess`, ...) are refused with
  `UnsafeCheckpointError` before anything is called.

The allowed globals are handed out as private copies, so a pickle cannot alter them (BUILD) for
the files read after it.

The legacy format of PyTorch < 1.6 (a pickle stream with a magic number, no zip) is not read: it
is refused with an error that says how to re-save the file. Its magic number is recognised by a
data-only unpickler that resolves no global at all.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import posixpath
import types
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from ltx import files


class CheckpointFormatError(ValueError):
    """The file is not a complete checkpoint in a format this reader supports."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The pickle asks for a global that could run code."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# Modules whose globals can run code, read or write files, or load more code.
_UNSAFE_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib",
                   "runpy", "pickle", "_pickle", "marshal", "ctypes", "pty", "code", "codeop",
                   "builtins", "__builtin__", "io", "_io", "signal", "multiprocessing", "threading",
                   "webbrowser", "platform", "pdb", "types", "functools", "operator", "inspect",
                   "gc", "tempfile", "glob", "zipfile", "tarfile", "urllib", "http", "ftplib",
                   "asyncio")
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
MAX_EXPANSION = 1024  # How many times a (stride-0) tensor may repeat its storage's elements.


class StorageType:
    """What `torch.FloatStorage` (etc.) unpickles to: the dtype of a storage."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])

    def __repr__(self):
        return f"torch.{self.name}"


class Storage:
    """A storage read from the archive: `array` [numel] of its dtype."""

    def __init__(self, array: np.ndarray, key: str):
        self.array = array
        self.key = key


class Placeholder:
    """An object of a class that is not imported: its name, constructor arguments and state.

    Attributes:
      source: 'module.Name' of the class in the pickle.
      args: the arguments it was created with.
      state: what the pickle set as its state (a dict, a tuple, ...), or None.
    """

    source = "?"

    def __new__(cls, *args, **kwargs):
        # The pickle creates instances with NEWOBJ (`cls.__new__(cls, *args)`, no __init__) as
        # often as with REDUCE (`cls(*args)`): record the arguments in both cases.
        self = super().__new__(cls)
        self.args, self.kwargs, self.state = args, kwargs, None
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<placeholder for {self.source}>"


def _placeholder_class(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"source": f"{module}.{name}",
                                       "__module__": "ltx.convert.torch_pickle"})


def _rebuild_tensor(storage: Storage, offset: int, size, stride, *unused) -> np.ndarray:
    """A tensor as a NumPy copy of its strided view of `storage`."""
    if not isinstance(storage, Storage):
        raise CheckpointFormatError(f"a tensor refers to {storage!r}, not to a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointFormatError(f"tensor size {size} and stride {stride} do not match")
    flat = storage.array
    if 0 in size:
        return np.zeros(size, flat.dtype)
    elements = int(np.prod(size, dtype=np.float64))
    if elements > max(MAX_EXPANSION * flat.size, 2 ** 20):
        # A stride-0 (expanded) tensor may repeat its storage, but not without bound.
        raise CheckpointFormatError(
            f"a tensor of size {size} would expand storage {storage.key} of {flat.size} "
            f"elements {elements / flat.size:.3g}x; refused (at most {MAX_EXPANSION}x)")
    offset = int(offset)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or last >= flat.size:
        raise CheckpointFormatError(
            f"a tensor of size {size}, stride {stride}, offset {offset} reads element "
            f"{offset if offset < 0 else last} of storage {storage.key}, which has {flat.size}: "
            "the storage is truncated or the tensor damaged")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride),
        writeable=False)
    return np.array(view)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


def _rebuild_parameter_with_state(data, requires_grad=None, backward_hooks=None, state=None):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=np.dtype(dtype), count=1)[0] if data is not None \
        else np.dtype(dtype).type()


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): tuple,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): lambda text, encoding="utf-8": text.encode(encoding),
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    **{("torch", name): StorageType(name) for name in _STORAGE_DTYPES},
}


def _fresh(obj):
    """A private copy of an allowed global, so that a pickle's BUILD on it (setting attributes,
    `__defaults__`, a storage's dtype) cannot change how later files are read."""
    if isinstance(obj, StorageType):
        return StorageType(obj.name)
    if isinstance(obj, types.FunctionType):
        return types.FunctionType(obj.__code__, obj.__globals__, obj.__name__, obj.__defaults__,
                                  obj.__closure__)
    return obj  # Built-in types (OrderedDict, tuple, set, np.dtype, ...) are immutable.


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch.save pickle with the storages of `archive` under `prefix`."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str, big_endian: bool):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._big_endian = big_endian
        self._storages: dict[str, Storage] = {}
        self._names = set(archive.namelist())

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _fresh(_ALLOWED[(module, name)])
        if module.split(".")[0] in _UNSAFE_MODULES:
            raise UnsafeCheckpointError(
                f"{self._path}: the pickle asks for {module}.{name}, which could run code; "
                "refused (ltx reads tensors and plain containers only)")
        return _placeholder_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"{self._path}: unknown persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, StorageType):
            raise CheckpointFormatError(f"{self._path}: storage {key} has the unsupported type "
                                        f"{storage_type!r}")
        if key in self._storages:
            return self._storages[key]
        entry = f"{self._prefix}/data/{key}" if self._prefix else f"data/{key}"
        if entry not in self._names:
            raise CheckpointFormatError(f"{self._path}: storage {key} ({entry}) is missing from "
                                        "the archive: the file is damaged")
        try:
            raw = self._archive.read(entry)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise CheckpointFormatError(f"{self._path}: storage {key} cannot be read: {err}")
        dtype = storage_type.dtype.newbyteorder(">") if self._big_endian else storage_type.dtype
        if len(raw) < numel * dtype.itemsize:
            raise CheckpointFormatError(
                f"{self._path}: storage {key} holds {len(raw)} bytes, {numel} x "
                f"{dtype.itemsize} expected: the file is truncated")
        array = np.frombuffer(raw, dtype=dtype, count=numel)
        storage = Storage(array.astype(storage_type.dtype) if self._big_endian else array, key)
        self._storages[key] = storage
        return storage


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data only: no global, no persistent id, so nothing can be called."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global {module}.{name} refused")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent id refused")


def _refuse_legacy(path: str, file) -> None:
    file.seek(0)
    head = file.read(64)
    try:
        magic = _DataOnlyUnpickler(io.BytesIO(head)).load()
    except Exception:  # noqa: BLE001 - any failure means: not the legacy magic number.
        magic = None
    if type(magic) is int and magic == _LEGACY_MAGIC:
        raise CheckpointFormatError(
            f"{path} is in the legacy torch.save format of PyTorch < 1.6, which ltx does not "
            "read; re-save it with a current PyTorch: torch.save(torch.load(path), path)")
    if head.startswith(b"PK\x03\x04"):
        raise CheckpointFormatError(f"{path} starts like a zip archive but has no readable "
                                    "central directory: the file is truncated or damaged")
    raise CheckpointFormatError(f"{path} is not a torch.save zip archive (nor a legacy one): "
                                "the file is damaged or not a PyTorch checkpoint")


def load(path: str) -> Any:
    """The object saved with `torch.save` at `path`, tensors as NumPy arrays.

    Raises:
      FileNotFoundError: no such file.
      UnsafeCheckpointError: the pickle asks for a global that could run code.
      CheckpointFormatError: a legacy, truncated or otherwise damaged file, naming the cause.
    """
    path = os.fspath(path)
    if not files.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    # zipfile reads the archive through a file object, so a URL works as a local path does; it
    # stays open while the storages are read.
    with files.open(path, "rb") as file:
        return _load_archive(path, file)


def _load_archive(path: str, file) -> Any:
    """`load` of the open checkpoint file `file` (`path` names it in errors)."""
    if not zipfile.is_zipfile(file):
        _refuse_legacy(path, file)
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointFormatError(f"{path} is not a readable zip archive: {err}") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{path} holds {len(pickles)} data.pkl entries; a "
                                        "torch.save archive has exactly one")
        prefix = posixpath.dirname(pickles[0])  # Zip member names are '/'-separated.
        byteorder = f"{prefix}/byteorder" if prefix else "byteorder"
        try:
            big_endian = (byteorder in archive.namelist()
                          and archive.read(byteorder).strip() == b"big")
            with archive.open(pickles[0]) as f:
                return _RestrictedUnpickler(f, archive, prefix, path, big_endian).load()
        except CheckpointFormatError as err:
            if str(err).startswith(path):
                raise
            raise type(err)(f"{path}: {err}") from None  # Errors of _rebuild_tensor.
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
                AttributeError, IndexError, KeyError, OSError, NotImplementedError,
                RuntimeError) as err:
            # NotImplementedError / RuntimeError: a compression method or encryption that
            # torch.save never writes.
            raise CheckpointFormatError(f"{path}: the pickle cannot be read: {err}") from None
