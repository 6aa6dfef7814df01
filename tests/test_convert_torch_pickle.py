"""`ltx.convert.torch_pickle`: reading torch.save files without PyTorch.

The files are written by `torch_files` (the zip layout and pickle opcodes of torch.save, no
torch), plus the real torch.save fixtures of tests/fixtures/torch (see its README.md).
"""

import collections
import dataclasses
import pickle
import pickletools
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import torch_files as tf
from torch_files import Raw, Tensor

from ltx.convert import torch_pickle
from ltx.convert.torch_pickle import CheckpointFormatError, Placeholder, UnsafeCheckpointError

FIXTURES = Path(__file__).parent / "fixtures" / "torch"


def _save_load(tmp_path, obj, **kwargs):
    return torch_pickle.load(Path(tf.save(tmp_path / "model.pth", obj, **kwargs)))


def _reference(t: Tensor) -> np.ndarray:
    """What torch's `storage[offset:].as_strided(size, stride)` holds."""
    flat = t.storage[t.offset:]
    return np.lib.stride_tricks.as_strided(
        flat, shape=t.size, strides=tuple(s * flat.itemsize for s in t.stride)).copy()


# The writer itself.

def _canonical_ops(data: bytes) -> list:
    """The pickle's opcodes with memo PUTs dropped, GETs replaced by the memoised opcode and
    all integer opcodes written as ('INT', value): the same for two equal pickles whatever
    their memoisation."""
    memo, ops, last = {}, [], None
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            memo[len(memo) if op.name == "MEMOIZE" else arg] = last
            continue
        if op.name in ("BINGET", "LONG_BINGET", "GET"):
            assert memo[arg] is not None, "a GET of a compound object"
            ops.append(memo[arg])
            continue
        entry = ("INT", arg) if op.name in ("BININT", "BININT1", "BININT2", "LONG1") else (
            op.name, arg)
        last = entry if op.name in ("GLOBAL", "BINUNICODE") else None
        ops.append(entry)
    return ops


def test_the_writer_lays_out_a_state_dict_as_torch_save_does(tmp_path):
    path = FIXTURES / "ldam_resnet32_c100.pth"
    with zipfile.ZipFile(path) as z:
        name = z.namelist()[0].split("/")[0]
        real = _canonical_ops(z.read(f"{name}/data.pkl"))
        assert z.read(f"{name}/byteorder") == b"little" and z.read(f"{name}/version") == b"3\n"
    state = collections.OrderedDict([
        ("conv1.weight", Tensor("0", np.zeros(432, np.float32), 0, (16, 3, 3, 3), (27, 9, 3, 1))),
        ("bn1.weight", Tensor("1", np.zeros(16, np.float32), 0, (16,), (1,)))])
    written = tf.save(tmp_path / "m.pth", state, name=name)
    with zipfile.ZipFile(written) as z:
        assert sorted(z.namelist()) == sorted(
            [f"{name}/{e}" for e in ("data.pkl", "byteorder", "version", "data/0", "data/1")])
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        mine = _canonical_ops(z.read(f"{name}/data.pkl"))
    assert mine[0] == ("PROTO", 2) and mine[-2:] == [("SETITEMS", None), ("STOP", None)]
    body = mine[1:-2]  # GLOBAL OrderedDict, (), REDUCE, MARK, the two entries.
    start = real.index(("GLOBAL", "collections OrderedDict"))
    assert real[start:start + len(body)] == body


# Round trips.

DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int64, np.int32, np.int16,
          np.int8, np.uint8, np.bool_]


def _values(dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind == "f" or dtype == ml_dtypes.bfloat16:
        info = ml_dtypes.finfo(dtype)
        return np.array([[0.0, -1.5, float(info.max)],
                         [float(info.tiny), np.inf, -np.inf]]).astype(dtype)
    info = np.iinfo(dtype)
    return np.array([[0, 1, info.max], [info.min, info.min + 1, 7]], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_round_trips(tmp_path, dtype):
    values = _values(dtype)
    out = _save_load(tmp_path, {"x": tf.tensor("0", values)})
    assert out["x"].dtype == np.dtype(dtype)
    assert out["x"].shape == (2, 3)
    np.testing.assert_array_equal(out["x"], values)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, ml_dtypes.bfloat16, np.bool_],
                         ids=lambda d: np.dtype(d).name)
def test_a_big_endian_file_is_byteswapped(tmp_path, dtype):
    values = _values(dtype)
    out = _save_load(tmp_path, {"x": tf.tensor("0", values)}, byteorder="big")
    assert out["x"].dtype == np.dtype(dtype) and out["x"].dtype.isnative
    np.testing.assert_array_equal(out["x"], values)


def test_a_nan_payload_and_a_parameter_round_trip(tmp_path):
    values = np.array([np.nan, 1.0, -0.0], np.float32)
    out = _save_load(tmp_path, {"w": tf.tensor("0", values, parameter=True)})
    assert isinstance(out["w"], np.ndarray)
    assert out["w"].view(np.uint32).tolist() == values.view(np.uint32).tolist()


def test_tensors_saved_from_a_gpu_and_numpy_scalars(tmp_path):
    # A checkpoint saved during GPU training records 'cuda:0'; trainers often store NumPy
    # scalars (best accuracy): spliced in here exactly as pickle writes them.
    values = np.arange(4, dtype=np.float32)
    scalars = {"f8": np.float64(0.25), "i8": np.int64(-7), "f4": np.float32(1.5)}
    obj = {"w": dataclasses.replace(tf.tensor("0", values), location="cuda:0"),
           **{k: Raw(pickle.dumps(v, protocol=2)[2:-1]) for k, v in scalars.items()}}
    out = _save_load(tmp_path, obj)
    np.testing.assert_array_equal(out["w"], values)
    for name, value in scalars.items():
        assert type(out[name]) is type(value) and out[name] == value, name


def test_strided_views_of_shared_storages(tmp_path):
    base = np.arange(24, dtype=np.float32) * 1.5
    other = np.arange(10, dtype=np.int64) - 3
    views = {
        "transposed": Tensor("0", base, 0, (4, 6), (1, 4)),  # A [6, 4] tensor's .t().
        "sliced": Tensor("0", base, 7, (2, 3), (6, 2)),  # x.view(4, 6)[1:3, 1::2]
        "whole": Tensor("0", base, 0, (2, 3, 4), (12, 4, 1)),
        "expanded": Tensor("1", other, 2, (3, 4), (0, 1)),  # other[2:6].expand(3, 4)
        "scalar": Tensor("1", other, 9, (), ()),
        "empty": Tensor("1", other, 0, (0, 5), (5, 1)),
        "last": Tensor("0", base, 23, (1,), (1,)),
    }
    out = _save_load(tmp_path, views)
    for name, view in views.items():
        assert out[name].shape == view.size, name
        assert out[name].dtype == view.storage.dtype, name
        np.testing.assert_array_equal(out[name], _reference(view), err_msg=name)
    np.testing.assert_array_equal(out["transposed"], base.reshape(6, 4).T)
    assert out["scalar"].ndim == 0 and out["scalar"] == 6
    assert out["empty"].shape == (0, 5)

    for i, (name, array) in enumerate(out.items()):  # Copies: no two results share memory.
        assert all(not np.shares_memory(array, b) for b in list(out.values())[i + 1:]), name
    before = {k: v.copy() for k, v in out.items()}
    for name, array in out.items():  # Writing into one never changes another.
        if array.flags.writeable and array.size:
            array[...] = 0
            assert all(np.array_equal(out[k], before[k]) for k in out if k != name), name
            array[...] = before[name]


def test_views_into_one_storage_are_writeable_independent_copies(tmp_path):
    base = np.arange(6, dtype=np.float32)
    out = _save_load(tmp_path, {"a": Tensor("0", base, 0, (6,), (1,)),
                                "b": Tensor("0", base, 2, (2,), (1,))})
    assert out["a"].flags.writeable and out["b"].flags.writeable
    out["a"][2] = 100.0
    assert out["b"].tolist() == [2.0, 3.0]
    out["b"][:] = -1.0
    assert out["a"].tolist() == [0.0, 1.0, 100.0, 3.0, 4.0, 5.0]


def test_nested_containers_keep_their_types_and_order(tmp_path):
    keys = ["zeta", "alpha", "mid", "beta"]  # Not sorted: the order must survive.
    state = collections.OrderedDict(
        (k, tf.tensor(str(i), np.full((2,), i, np.float32))) for i, k in enumerate(keys))
    obj = {"state_dict": state, "epoch": 7, "big": 2**40, "neg": -3, "lr": 0.025,
           "arch": "resnet32", "flags": [True, False, None],
           "history": [1, "two", [3.0, tf.tensor("9", np.array([4], np.int32))]],
           "shape": (1, 2, 3), "nested": {"a": {"b": {"c": "deep"}}}, "empty": {}}
    out = _save_load(tmp_path, obj)
    assert type(out) is dict and list(out) == list(obj)
    assert type(out["state_dict"]) is collections.OrderedDict
    assert list(out["state_dict"]) == keys
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(out["state_dict"][k], np.full((2,), i, np.float32))
    assert (out["epoch"], out["big"], out["neg"], out["lr"]) == (7, 2**40, -3, 0.025)
    assert out["arch"] == "resnet32" and out["flags"] == [True, False, None]
    assert out["history"][:2] == [1, "two"] and out["history"][2][0] == 3.0
    np.testing.assert_array_equal(out["history"][2][1], np.array([4], np.int32))
    assert out["shape"] == (1, 2, 3) and out["nested"] == {"a": {"b": {"c": "deep"}}}
    assert out["empty"] == {}


def test_an_archive_with_data_pkl_at_its_root(tmp_path):
    path = tmp_path / "flat.pth"
    values = np.arange(3, dtype=np.int16)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", tf.pickle_bytes({"x": tf.tensor("0", values)}))
        z.writestr("byteorder", b"little")
        z.writestr("data/0", tf.storage_bytes(values))
    np.testing.assert_array_equal(torch_pickle.load(str(path))["x"], values)


# Code that must never run.

CODE = {  # global -> arguments that would create `target`.
    ("posix", "system"): lambda target: (f"touch {target}",),
    ("os", "system"): lambda target: (f"touch {target}",),
    ("builtins", "eval"): lambda target: (f"open({str(target)!r},'w')",),  # No '.'.
    ("subprocess", "Popen"): lambda target: (["touch", str(target)],),
    ("builtins", "exec"): lambda target: (f"open({str(target)!r}, 'w').close()",),
    ("shutil", "copy"): lambda target: (__file__, str(target)),
}
PUSH_GLOBAL = {
    "GLOBAL": tf.global_op,
    "STACK_GLOBAL": tf.stack_global_op,
}


def _evil(module, name, target, push="GLOBAL") -> Raw:
    return Raw(tf.call_op(PUSH_GLOBAL[push](module, name), CODE[(module, name)](target)))


def test_the_evil_pickles_would_run_their_code(tmp_path):
    # The check below only means something if the same opcodes do run under plain pickle.
    target = tmp_path / "ran"
    data = pickle.PROTO + b"\x02" + _evil("builtins", "eval", target).data + pickle.STOP
    pickle.loads(data)
    assert target.exists()


@pytest.mark.parametrize("push", list(PUSH_GLOBAL))
@pytest.mark.parametrize("module,name", list(CODE), ids=[".".join(k) for k in CODE])
def test_globals_that_run_code_are_refused(tmp_path, module, name, push):
    target = tmp_path / "pwned"
    obj = {"w": tf.tensor("0", np.zeros(2, np.float32)), "x": _evil(module, name, target, push)}
    with pytest.raises(UnsafeCheckpointError, match=rf"{module}\.{name}.*could run code"):
        _save_load(tmp_path, obj)
    assert not target.exists()


def test_an_inst_opcode_is_refused(tmp_path):
    target = tmp_path / "pwned"
    inst = (pickle.MARK + tf.string_op(f"touch {target}") + pickle.INST + b"os\nsystem\n")
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        _save_load(tmp_path, {"x": Raw(inst)})
    assert not target.exists()


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval")],
                         ids=["os.system", "builtins.eval"])
def test_a_bare_pickle_that_runs_code_is_refused_without_running_it(tmp_path, monkeypatch,
                                                                    module, name):
    # Not a zip: the legacy-format check reads its first 64 bytes, which here hold the whole
    # pickle (a short relative target); it must not unpickle them for real.
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    path.write_bytes(b"\x80\x02" + _evil(module, name, "p").data + pickle.STOP)
    assert len(path.read_bytes()) <= 64
    with pytest.raises(CheckpointFormatError, match="not a torch.save zip"):
        torch_pickle.load(str(path))
    assert not (tmp_path / "p").exists()


def test_a_legacy_file_is_refused_before_its_pickle_runs(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "old.pth"
    rest = b"\x80\x02" + _evil("os", "system", target).data + pickle.STOP
    data = tf.legacy_bytes(rest)
    assert data.startswith(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2))
    path.write_bytes(data)
    with pytest.raises(CheckpointFormatError, match="legacy") as err:
        torch_pickle.load(str(path))
    assert "PyTorch < 1.6" in str(err.value) and not target.exists()


def test_allowed_globals_cannot_be_altered_for_later_files(tmp_path):
    # BUILD with slot state setattr()s on the object under it: here the FloatStorage global,
    # given int8 as its dtype. That must not change how the next file reads its floats.
    int8 = tf.call_op(tf.global_op("numpy", "dtype"), ("i1", False, True))
    poison = (tf.global_op("torch", "FloatStorage") + pickle.NONE + pickle.EMPTY_DICT
              + pickle.MARK + tf.string_op("dtype") + int8 + pickle.SETITEMS + pickle.TUPLE2
              + pickle.BUILD + pickle.POP + pickle.NONE)
    try:
        _save_load(tmp_path, {"x": Raw(poison)})
    except CheckpointFormatError:
        pass  # Refusing the BUILD is fine too.
    values = np.array([1.5, -2.0], np.float32)
    out = torch_pickle.load(tf.save(tmp_path / "good.pth", {"x": tf.tensor("0", values)}))
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"], values)


# Unknown classes.

def test_an_unknown_class_becomes_an_inert_placeholder(tmp_path):
    assert "mypackage" not in sys.modules
    reduce_build = (tf.call_op(tf.global_op("mypackage.evil", "Evil"), (1, "rm -rf /"))
                    + tf.value_op({"secret": 42, "path": "x"}) + pickle.BUILD)
    newobj = (tf.global_op("mypackage", "Config") + tf.tuple_op(("a", 2)) + pickle.NEWOBJ
              + tf.value_op({"_config": {"n_gpu": 1}}) + pickle.BUILD)
    func = tf.call_op(tf.global_op("mypackage.utils", "make"), ())
    out = _save_load(tmp_path, {"evil": Raw(reduce_build), "config": Raw(newobj),
                                "made": Raw(func), "w": tf.tensor("0", np.ones(1, np.uint8))})
    assert not any(m == "mypackage" or m.startswith("mypackage.") for m in sys.modules)

    evil = out["evil"]
    assert isinstance(evil, Placeholder) and evil.source == "mypackage.evil.Evil"
    assert evil.args == (1, "rm -rf /") and evil.state == {"secret": 42, "path": "x"}
    assert "mypackage.evil.Evil" in repr(evil)
    config = out["config"]
    assert isinstance(config, Placeholder) and config.source == "mypackage.Config"
    assert config.args == ("a", 2) and config.state == {"_config": {"n_gpu": 1}}
    assert isinstance(out["made"], Placeholder) and out["made"].args == ()
    assert out["made"].state is None
    assert out["w"].tolist() == [1]


def test_a_known_but_unimported_module_is_not_imported(tmp_path):
    assert "this" not in sys.modules  # Importing `this` prints the Zen of Python.
    out = _save_load(tmp_path, {"x": Raw(tf.call_op(tf.global_op("this", "s"), ()))})
    assert "this" not in sys.modules
    assert isinstance(out["x"], Placeholder) and out["x"].source == "this.s"


def test_a_placeholder_is_not_a_storage(tmp_path):
    fake = tf.call_op(tf.global_op("torch._utils", "_rebuild_tensor_v2"),
                      (Raw(tf.call_op(tf.global_op("mypackage", "Storage"), ())), 0, (1,), (1,)))
    with pytest.raises(CheckpointFormatError, match="not to a storage"):
        _save_load(tmp_path, {"x": Raw(fake)})


# Damaged files.

def _valid(tmp_path, name="model.pth") -> str:
    state = {f"w{i}": tf.tensor(str(i), np.arange(500, dtype=np.float32) + i) for i in range(4)}
    return tf.save(tmp_path / name, state)


def test_a_zip_cut_in_half_is_refused(tmp_path):
    path = Path(_valid(tmp_path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        torch_pickle.load(str(path))


def test_a_zip_with_a_corrupted_storage_is_refused(tmp_path):
    path = Path(_valid(tmp_path))
    data = bytearray(path.read_bytes())
    data[data.index(tf.storage_bytes(np.arange(500, dtype=np.float32) + 2)) + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match="storage 2 cannot be read"):
        torch_pickle.load(str(path))


def test_a_missing_storage_is_named(tmp_path):
    state = {"a": tf.tensor("0", np.zeros(3, np.float32)),
             "b": tf.tensor("17", np.zeros(3, np.float32))}
    with pytest.raises(CheckpointFormatError, match=r"storage 17 \(archive/data/17\) is missing"):
        _save_load(tmp_path, state, omit=("17",))


def test_a_storage_shorter_than_its_numel_is_truncated(tmp_path):
    t = tf.tensor("3", np.zeros(10, np.float64))
    with pytest.raises(CheckpointFormatError, match=r"storage 3 holds 40 bytes.*truncated"):
        _save_load(tmp_path, {"x": t}, storages={"3": b"\0" * 40})


def test_a_numel_beyond_the_stored_bytes_is_truncated(tmp_path):
    t = dataclasses.replace(tf.tensor("0", np.zeros(4, np.int32)), numel=8)
    with pytest.raises(CheckpointFormatError, match=r"holds 16 bytes, 8 x 4 expected"):
        _save_load(tmp_path, {"x": t})


@pytest.mark.parametrize("offset,size,stride", [(4, (2,), (1,)), (0, (2, 3), (3, 1)),
                                                (0, (3,), (3,)), (5, (), ()), (-1, (1,), (1,))])
def test_a_view_past_its_storage_is_refused(tmp_path, offset, size, stride):
    t = Tensor("0", np.zeros(5, np.float32), offset, size, stride)
    message = r"model.pth: a tensor .* reads element -?\d+ of storage 0"
    with pytest.raises(CheckpointFormatError, match=message):
        _save_load(tmp_path, {"x": t})


@pytest.mark.parametrize("size,stride", [((2, 2), (1,)), ((2,), (-1,)), ((-1,), (1,))])
def test_an_impossible_size_or_stride_is_refused(tmp_path, size, stride):
    t = Tensor("0", np.zeros(5, np.float32), 0, size, stride)
    with pytest.raises(CheckpointFormatError, match="do not match"):
        _save_load(tmp_path, {"x": t})


def test_an_unsupported_storage_type_is_named(tmp_path):
    t = Tensor("0", np.zeros(4, np.float32), 0, (2,), (1,), storage_name="ComplexFloatStorage")
    with pytest.raises(CheckpointFormatError, match="unsupported type.*ComplexFloatStorage"):
        _save_load(tmp_path, {"x": t})


def test_an_unknown_persistent_id_is_refused(tmp_path):
    pid = tf.tuple_op(("module", "x")) + pickle.BINPERSID
    with pytest.raises(CheckpointFormatError, match="unknown persistent id"):
        _save_load(tmp_path, {"x": Raw(pid)})


def test_a_damaged_pickle_is_refused(tmp_path):
    good = tf.pickle_bytes({"x": tf.tensor("0", np.zeros(2, np.float32))})
    with pytest.raises(CheckpointFormatError, match="the pickle cannot be read"):
        _save_load(tmp_path, {"x": tf.tensor("0", np.zeros(2, np.float32))},
                   data=good[:len(good) // 2])


def test_a_zip_without_data_pkl_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/readme.txt", b"hello")
    with pytest.raises(CheckpointFormatError, match="0 data.pkl entries"):
        torch_pickle.load(str(path))


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"", b"hello.\n"],
                         ids=["random", "empty", "text"])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match="not a torch.save zip archive") as err:
        torch_pickle.load(str(path))
    assert "legacy" not in str(err.value).split("(")[0]


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        torch_pickle.load(str(tmp_path / "nope.pth"))


def test_the_errors_form_a_hierarchy():
    assert issubclass(UnsafeCheckpointError, CheckpointFormatError)
    assert issubclass(CheckpointFormatError, ValueError)


# The real torch.save fixtures.

FIXTURE_ENTRIES = {"ldam_resnet32_c100": 187, "ride_resnet32_c100_3experts": 429,
                   "balpoe_resnet32_c100_3experts": 429, "torchvision_resnet10_in_stem": 7}


def test_every_fixture_is_known():
    assert sorted(p.stem for p in FIXTURES.glob("*.pth")) == sorted(FIXTURE_ENTRIES)


@pytest.mark.parametrize("case", sorted(FIXTURE_ENTRIES))
def test_a_real_torch_save_fixture_loads(case):
    out = torch_pickle.load(str(FIXTURES / f"{case}.pth"))
    state = out if case.startswith("torchvision") else out["state_dict"]
    assert type(state) is collections.OrderedDict
    assert len(state) == FIXTURE_ENTRIES[case]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    counters = {k: v for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert counters and all(v.dtype == np.int64 and v.shape == () and v == 100
                            for v in counters.values())
    floats = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in floats)
    running_var = [v for k, v in state.items() if k.endswith("running_var")]
    assert running_var and all(((v >= 0.5) & (v <= 1.5)).all() for v in running_var)


@pytest.mark.parametrize("case,width", [("ride_resnet32_c100_3experts", 48),
                                        ("balpoe_resnet32_c100_3experts", 64)])
def test_the_multi_expert_trainer_checkpoints(case, width):
    out = torch_pickle.load(str(FIXTURES / f"{case}.pth"))
    assert list(out) == ["arch", "epoch", "state_dict", "optimizer", "monitor_best", "config",
                         "criterion"]
    assert out["arch"] == "ResNet32Model" and out["epoch"] == 1
    state = out["state_dict"]
    assert all(k.startswith("backbone.") for k in state)
    for e in range(3):
        assert state[f"backbone.linears.{e}.weight"].shape == (width, 100)
    assert state["backbone.conv1.weight"].shape == (16, 3, 3, 3)

    config = out["config"]
    assert isinstance(config, Placeholder) and config.source == "parse_config.ConfigParser"
    assert config.args == () and isinstance(config.state, dict)
    assert set(config.state) >= {"_config", "resume", "_save_dir", "_log_dir", "log_levels"}
    assert type(config.state["_config"]) is collections.OrderedDict
    assert config.state["_config"]["arch"]["type"] == "ResNet32Model"
    assert config.state["_config"]["arch"]["args"]["num_experts"] == 3
    save_dir = config.state["_save_dir"]
    assert isinstance(save_dir, Placeholder) and save_dir.source == "pathlib.PosixPath"
    assert save_dir.args[0] == "saved" and save_dir.args[-1] == "fixture"

    optimizer = out["optimizer"]
    # The fixture's momentum buffers were dropped (README.md); LDAM's checkpoint keeps its 94.
    assert optimizer["state"] == {}
    group = optimizer["param_groups"][0]
    assert group["params"] == list(range(216))
    assert group["lr"] == pytest.approx(0.04) and group["initial_lr"] == pytest.approx(0.1)
    assert group["nesterov"] is True
    if case.startswith("ride"):
        assert out["monitor_best"] == 0.25 and out["criterion"] == {}
    else:
        assert out["monitor_best"] == -np.inf
        assert out["criterion"]["bsce_weight"].shape == (100,)
        np.testing.assert_array_equal(out["criterion"]["tau_list"], [0.0, 1.0, 2.0])


def test_the_ldam_and_torchvision_fixtures():
    ldam = torch_pickle.load(str(FIXTURES / "ldam_resnet32_c100.pth"))
    assert set(ldam) == {"epoch", "arch", "state_dict", "best_acc1", "optimizer"}
    assert ldam["arch"] == "resnet32"
    assert ldam["state_dict"]["linear.weight"].shape == (64, 100)
    assert ldam["best_acc1"].shape == () and ldam["best_acc1"] == 0.0
    assert len(ldam["optimizer"]["state"]) == 94
    assert all(set(s) == {"momentum_buffer"} for s in ldam["optimizer"]["state"].values())

    # torchvision's bare state_dict, all but the stem and fc.bias deleted (README.md).
    vision = torch_pickle.load(str(FIXTURES / "torchvision_resnet10_in_stem.pth"))
    assert type(vision) is collections.OrderedDict
    assert list(vision) == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                            "bn1.running_var", "bn1.num_batches_tracked", "fc.bias"]
    assert vision["fc.bias"].shape == (1000,)
    assert vision["conv1.weight"].shape == (64, 3, 7, 7)
    np.testing.assert_array_equal(vision["bn1.weight"], np.ones(64, np.float32))
    np.testing.assert_array_equal(vision["bn1.bias"], np.zeros(64, np.float32))


def test_a_tensor_expanding_its_storage_without_bound_is_refused(tmp_path):
    path = tmp_path / "expanded.pth"
    tf.save(path, {"big": Tensor("0", np.zeros(1, np.float32), 0, (1 << 16, 1 << 16), (0, 0))})
    with pytest.raises(CheckpointFormatError, match="would expand storage 0"):
        torch_pickle.load(str(path))
    tf.save(path, {"ok": Tensor("0", np.arange(3, dtype=np.float32), 0, (4, 3), (0, 1))})
    np.testing.assert_array_equal(torch_pickle.load(str(path))["ok"], np.tile(np.arange(3), (4, 1)))
