"""Writing `torch.save`-format files without PyTorch, for the `ltx.convert` tests.

`save(path, obj)` writes the zip archive torch writes (PyTorch >= 1.6, `_use_new_zipfile_
serialization`): `<name>/data.pkl`, `<name>/byteorder` (b"little"), `<name>/data/<key>` (each
storage's raw bytes) and `<name>/version` (b"3\\n"), all stored uncompressed. The pickle is
emitted opcode by opcode, protocol 2, the way torch's pickler lays out a tensor:

    GLOBAL 'torch._utils _rebuild_tensor_v2'
    MARK
      MARK 'storage' GLOBAL 'torch FloatStorage' <key> 'cpu' <numel> TUPLE BINPERSID
      <offset> (<size>...) (<stride>...) <requires_grad> OrderedDict() TUPLE
    REDUCE

`obj` may hold `Tensor`s (several may view one storage), dicts, `collections.OrderedDict`s,
lists, tuples, str, int, float, bool, None, and `Raw` pickle bytes spliced in verbatim (for
malicious or damaged files). Nothing here imports or fakes a `torch` module.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage", np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage", np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage", np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage", np.dtype(np.bool_): "BoolStorage",
}
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


@dataclasses.dataclass
class Tensor:
    """A tensor viewing `storage` (1-d, saved under `key`) at `offset` with `size` and `stride`.

    `numel` overrides the element count written in the persistent id (default: the storage's
    size), `storage_name` the storage class (default: from the dtype), `location` is the device
    torch records, `parameter` wraps it in `torch._utils._rebuild_parameter` as an
    `nn.Parameter` is saved.
    """

    key: str
    storage: np.ndarray
    offset: int = 0
    size: tuple = ()
    stride: tuple = ()
    numel: int | None = None
    storage_name: str | None = None
    location: str = "cpu"
    parameter: bool = False


@dataclasses.dataclass
class Raw:
    """Pickle opcodes that leave exactly one object on the stack, spliced in verbatim."""

    data: bytes


def tensor(key: str, array: np.ndarray, **kwargs) -> Tensor:
    """A contiguous tensor holding `array`, on its own storage `key`."""
    array = np.asarray(array)
    return Tensor(key, array.reshape(-1), 0, array.shape, contiguous_stride(array.shape),
                  **kwargs)


def contiguous_stride(size) -> tuple:
    """Row-major strides in elements, as torch's `Tensor.stride()` gives them."""
    stride, step = [], 1
    for n in reversed(tuple(size)):
        stride.append(step)
        step *= max(int(n), 1)
    return tuple(reversed(stride))


def global_op(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def stack_global_op(module: str, name: str) -> bytes:
    """The protocol-4 way to push a global (`find_class` is called the same)."""
    return string_op(module) + string_op(name) + pickle.STACK_GLOBAL


def string_op(text: str) -> bytes:
    data = text.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def int_op(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + struct.pack("<B", value)
    if 0 <= value < 65536:
        return pickle.BININT2 + struct.pack("<H", value)
    if -2**31 <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def tuple_op(items) -> bytes:
    """As protocol 2 writes tuples: EMPTY_TUPLE, TUPLE1-3, else MARK ... TUPLE."""
    body = b"".join(value_op(v) for v in items)
    short = {0: pickle.EMPTY_TUPLE, 1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}
    return body + short[len(items)] if len(items) in short else pickle.MARK + body + pickle.TUPLE


def call_op(callable_ops: bytes, args) -> bytes:
    """`callable(*args)`: the callable's opcodes, the argument tuple, REDUCE."""
    return callable_ops + tuple_op(args) + pickle.REDUCE


def _setitems(items) -> bytes:
    if not items:
        return b""
    body = b"".join(value_op(k) + value_op(v) for k, v in items)
    return pickle.MARK + body + pickle.SETITEMS


def _tensor_op(t: Tensor) -> bytes:
    name = t.storage_name or STORAGE_NAMES[np.dtype(t.storage.dtype)]
    numel = t.storage.size if t.numel is None else t.numel
    pid = (pickle.MARK + string_op("storage") + global_op("torch", name) + string_op(t.key)
           + string_op(t.location) + int_op(numel) + pickle.TUPLE + pickle.BINPERSID)
    hooks = call_op(global_op("collections", "OrderedDict"), ())
    ops = (global_op("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + pid
           + int_op(t.offset) + tuple_op(t.size) + tuple_op(t.stride) + pickle.NEWFALSE + hooks
           + pickle.TUPLE + pickle.REDUCE)
    if t.parameter:
        ops = (global_op("torch._utils", "_rebuild_parameter") + pickle.MARK + ops
               + pickle.NEWTRUE + call_op(global_op("collections", "OrderedDict"), ())
               + pickle.TUPLE + pickle.REDUCE)
    return ops


def value_op(value: Any) -> bytes:
    """The opcodes that push `value`."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, Tensor):
        return _tensor_op(value)
    if value is None:
        return pickle.NONE
    if value is True or value is False:
        return pickle.NEWTRUE if value else pickle.NEWFALSE
    if isinstance(value, int):
        return int_op(value)
    if isinstance(value, float):
        return pickle.BINFLOAT + struct.pack(">d", value)
    if isinstance(value, str):
        return string_op(value)
    if isinstance(value, tuple):
        return tuple_op(value)
    if isinstance(value, list):
        body = b"".join(value_op(v) for v in value)
        return pickle.EMPTY_LIST + (pickle.MARK + body + pickle.APPENDS if value else b"")
    if isinstance(value, collections.OrderedDict):
        return (call_op(global_op("collections", "OrderedDict"), ())
                + _setitems(list(value.items())))
    if isinstance(value, dict):
        return pickle.EMPTY_DICT + _setitems(list(value.items()))
    raise TypeError(f"cannot write {type(value).__name__}")


def pickle_bytes(obj: Any) -> bytes:
    """The protocol-2 pickle of `obj` as torch's `data.pkl` holds it."""
    return pickle.PROTO + b"\x02" + value_op(obj) + pickle.STOP


def storage_bytes(array: np.ndarray, byteorder: str = "little") -> bytes:
    """The raw bytes of a storage as torch writes them (little-endian unless told)."""
    array = np.ascontiguousarray(array).reshape(-1)
    if array.itemsize == 1:
        return array.view(np.uint8).tobytes()
    order = "<" if byteorder == "little" else ">"
    return array.view(f"u{array.itemsize}").astype(f"{order}u{array.itemsize}").tobytes()


def _storages(obj: Any, found: dict) -> dict:
    if isinstance(obj, Tensor):
        if obj.key in found and found[obj.key] is not obj.storage:
            raise ValueError(f"two different arrays for storage {obj.key}")
        found[obj.key] = obj.storage
    elif isinstance(obj, dict):
        for value in obj.values():
            _storages(value, found)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _storages(value, found)
    return found


def save(path, obj: Any, *, name: str = "archive", byteorder: str = "little",
         omit: tuple = (), storages: dict | None = None, data: bytes | None = None) -> str:
    """Writes `obj` at `path` as torch.save would; returns the path.

    `omit`: storage keys left out of the archive; `storages`: {key: raw bytes} written instead
    of the arrays' own bytes; `data`: a data.pkl written instead of `pickle_bytes(obj)`.
    """
    raw = {k: storage_bytes(v, byteorder) for k, v in _storages(obj, {}).items()}
    raw.update(storages or {})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", pickle_bytes(obj) if data is None else data)
        z.writestr(f"{name}/byteorder", byteorder.encode())
        for key, value in raw.items():
            if key not in omit:
                z.writestr(f"{name}/data/{key}", value)
        z.writestr(f"{name}/version", b"3\n")
    return str(path)


def legacy_bytes(rest: bytes = b"") -> bytes:
    """The start of a PyTorch < 1.6 file: the magic number pickled with protocol 2, then the
    protocol version 1001, then `rest`."""
    magic = LEGACY_MAGIC.to_bytes(10, "little")
    return (pickle.PROTO + b"\x02" + pickle.LONG1 + bytes([len(magic)]) + magic + pickle.STOP
            + pickle.PROTO + b"\x02" + int_op(1001) + pickle.STOP + rest)
