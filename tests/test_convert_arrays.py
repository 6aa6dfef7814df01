"""`ltx.convert.arrays`: any checkpoint file (.pth & co., .safetensors, .npz) as a flat state dict.

The torch files are written without PyTorch by `torch_files`; the real torch.save fixtures of
tests/fixtures/torch (see its README.md) are read as well.
"""

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import torch_files as tf

from ltx.convert import arrays
from ltx.convert.torch_pickle import CheckpointFormatError, UnsafeCheckpointError

FIXTURES = Path(__file__).parent / "fixtures" / "torch"


def _t(key, shape, dtype=np.float32, start=0):
    size = int(np.prod(shape))
    return tf.tensor(key, (np.arange(size) + start).astype(dtype).reshape(shape))


def _load(tmp_path, obj, name="model.pth"):
    return arrays.load_state_dict(tf.save(tmp_path / name, obj))


def test_a_trainer_dict_is_reduced_to_its_state_dict(tmp_path):
    state = collections.OrderedDict([("module.conv.weight", _t("0", (2, 3))),
                                     ("module.bn.num_batches_tracked", _t("1", (), np.int64, 100)),
                                     ("module.fc.bias", _t("2", (4,), start=5))])
    checkpoint = {"epoch": 3, "arch": "resnet32", "state_dict": state,
                  "optimizer": {"state": {0: {"momentum_buffer": _t("3", (2, 3))}},
                                "param_groups": [{"lr": 0.1}]},
                  "best_acc1": _t("4", ())}
    out = _load(tmp_path, checkpoint)
    assert out.container == "state_dict"
    assert list(out.arrays) == ["conv.weight", "bn.num_batches_tracked", "fc.bias"]
    np.testing.assert_array_equal(out.arrays["conv.weight"], np.arange(6.0).reshape(2, 3))
    assert out.arrays["bn.num_batches_tracked"].dtype == np.int64
    assert out.arrays["bn.num_batches_tracked"] == 100
    np.testing.assert_array_equal(out.arrays["fc.bias"], [5.0, 6.0, 7.0, 8.0])
    # The trainer's other entries (epoch, optimizer momentum, best_acc1) are dropped, not
    # merged into the weights; `skipped` names the non-array entries of the state dict only.
    assert out.skipped == []
    assert out.source.endswith("model.pth")


def test_the_first_container_that_holds_tensors_wins(tmp_path):
    checkpoint = {"state_dict": {"note": "no tensors here"}, "model": {"w": _t("0", (2,))},
                  "net": {"v": _t("1", (3,))}}
    out = _load(tmp_path, checkpoint)
    assert out.container == "model" and list(out.arrays) == ["w"]
    out = _load(tmp_path, {"net": {"v": _t("1", (3,))}, "epoch": 1}, name="net.pth")
    assert out.container == "net" and list(out.arrays) == ["v"]


def test_a_bare_state_dict_is_flattened_and_non_arrays_are_named(tmp_path):
    obj = {"encoder": {"layer": {"w": _t("0", (2, 2))}, "b": _t("1", (2,))},
           "steps": 10, "names": ["a", "b"], "head.w": _t("2", (1,))}
    out = _load(tmp_path, obj)
    assert out.container == ""
    assert list(out.arrays) == ["encoder.layer.w", "encoder.b", "head.w"]
    assert out.skipped == ["steps", "names"]


def test_the_module_prefix_is_kept_unless_every_key_has_it(tmp_path):
    obj = {"module.a": _t("0", (1,)), "b": _t("1", (1,))}
    assert list(_load(tmp_path, obj).arrays) == ["module.a", "b"]
    obj = {"module.a": _t("0", (1,)), "module.module.b": _t("1", (1,))}
    assert list(_load(tmp_path, obj, "all.pth").arrays) == ["a", "module.b"]


def test_strip_prefix():
    a, b = np.zeros(1), np.ones(2)
    assert arrays.strip_prefix({"module.x": a, "module.y": b}) == {"x": a, "y": b}
    some = {"module.x": a, "y": b}
    assert arrays.strip_prefix(some) is some
    assert arrays.strip_prefix({"backbone.x": a}, "backbone.") == {"x": a}
    assert arrays.strip_prefix({}) == {}


def test_a_file_without_arrays_is_refused(tmp_path):
    with pytest.raises(CheckpointFormatError, match="holds no arrays"):
        _load(tmp_path, {"epoch": 1, "arch": "resnet32"})


@pytest.mark.parametrize("ext", [".pt", ".tar", ".ckpt", ".bin", ".PTH"])
def test_every_torch_extension_is_read(tmp_path, ext):
    out = _load(tmp_path, {"w": _t("0", (3,), np.int8)}, name=f"model{ext}")
    assert out.arrays["w"].dtype == np.int8 and out.arrays["w"].tolist() == [0, 1, 2]


def test_an_unsafe_torch_file_stays_refused(tmp_path):
    evil = tf.Raw(tf.call_op(tf.global_op("os", "system"), (f"touch {tmp_path / 'p'}",)))
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        _load(tmp_path, {"w": _t("0", (1,)), "x": evil})
    assert not (tmp_path / "p").exists()


def test_safetensors(tmp_path):
    path = str(tmp_path / "model.safetensors")
    tensors = {"module.w": np.arange(6, dtype=np.float32).reshape(2, 3),
               "module.n": np.array(100, np.int64), "module.h": np.ones(2, np.float16),
               "module.m": np.array([True, False])}
    save_file(tensors, path)
    out = arrays.load_state_dict(path)
    assert out.container == "" and out.skipped == [] and out.source == path
    assert sorted(out.arrays) == ["h", "m", "n", "w"]
    for name, value in tensors.items():
        got = out.arrays[name[len("module."):]]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        np.testing.assert_array_equal(got, value)


def test_a_damaged_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": np.zeros(100, np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointFormatError, match="not a readable safetensors file"):
        arrays.load_state_dict(str(path))


def test_npz(tmp_path):
    path = str(tmp_path / "weights.npz")
    w, n = np.arange(12, dtype=np.float64).reshape(3, 4), np.array(7, np.int32)
    np.savez(path, **{"layer.w": w, "layer.n": n})
    out = arrays.load_state_dict(path)
    assert list(out.arrays) == ["layer.w", "layer.n"] and out.container == ""
    np.testing.assert_array_equal(out.arrays["layer.w"], w)
    assert out.arrays["layer.n"].dtype == np.int32 and out.arrays["layer.n"] == 7


def test_an_npz_with_an_object_array_is_refused(tmp_path):
    path = str(tmp_path / "evil.npz")
    np.savez(path, w=np.zeros(2), obj=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(CheckpointFormatError, match="object arrays are refused"):
        arrays.load_state_dict(path)


@pytest.mark.parametrize("kind", ["npy", "junk"])
def test_an_npz_that_is_not_an_archive_is_refused(tmp_path, kind):
    path = tmp_path / "weights.npz"
    if kind == "npy":
        np.save(tmp_path / "w.npy", np.arange(3))
        shutil.move(tmp_path / "w.npy", path)
    else:
        path.write_bytes(b"not an npz at all")
    with pytest.raises(CheckpointFormatError, match="not a readable .npz file"):
        arrays.load_state_dict(str(path))


def test_an_unknown_extension_is_refused_with_the_supported_ones(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n")
    with pytest.raises(CheckpointFormatError, match="unknown checkpoint extension '.h5'") as err:
        arrays.load_state_dict(str(path))
    for ext in (".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors", ".npz"):
        assert f"'{ext}'" in str(err.value)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        arrays.load_state_dict(str(tmp_path / "gone.safetensors"))


# The real torch.save fixtures.

@pytest.mark.parametrize("case,entries,container,prefix", [
    ("ldam_resnet32_c100", 187, "state_dict", ""),
    ("ride_resnet32_c100_3experts", 429, "state_dict", "backbone."),
    ("balpoe_resnet32_c100_3experts", 429, "state_dict", "backbone."),
    ("torchvision_resnet10_in_stem", 7, "", ""),
])
def test_the_real_fixtures_as_state_dicts(case, entries, container, prefix):
    out = arrays.load_state_dict(str(FIXTURES / f"{case}.pth"))
    assert len(out.arrays) == entries and out.container == container and out.skipped == []
    assert all(k.startswith(prefix) for k in out.arrays)
    counters = [v for k, v in out.arrays.items() if k.endswith("num_batches_tracked")]
    assert counters and all(v.dtype == np.int64 and v.shape == () and v == 100
                            for v in counters)
    stripped = arrays.strip_prefix(out.arrays, prefix) if prefix else out.arrays
    expected = {"ldam_resnet32_c100": {"linear.weight": (64, 100), "conv1.weight": (16, 3, 3, 3)},
                "ride_resnet32_c100_3experts": {"linears.0.weight": (48, 100),
                                                "layer3s.2.4.conv2.weight": (48, 48, 3, 3)},
                "balpoe_resnet32_c100_3experts": {"linears.2.weight": (64, 100),
                                                  "layer2s.1.0.conv1.weight": (32, 16, 3, 3)},
                "torchvision_resnet10_in_stem": {"fc.bias": (1000,),
                                                 "conv1.weight": (64, 3, 7, 7)}}
    for name, shape in expected[case].items():
        assert stripped[name].shape == shape, name


def test_a_fixture_npz_loads():
    out = arrays.load_state_dict(str(FIXTURES / "ride_resnet32_c100_3experts.npz"))
    assert {"x", "logits", "expert_logits", "meta"} <= set(out.arrays)
    assert out.arrays["x"].shape == (4, 3, 32, 32)
    assert out.arrays["expert_logits"].shape == (3, 4, 100)
