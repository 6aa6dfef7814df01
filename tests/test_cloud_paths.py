"""A gs:// workdir and data root, mapped onto a local folder by etils.epath's file-system mock:
ltx's own files (config, metrics, launches, final metrics, reports and pictures, sweep tables,
list files, images, predictions' inputs) are written and read through the path layer for the
whole flow: train, resume, evaluate, predict, sweep table.

The mock reaches everything that goes through `etils.epath`, but not orbax's TensorStore array
writes, which would open Cloud Storage themselves: `checkpointing.orbax_path` (the one place
ltx hands orbax a path) is mapped to the local folder too, so the checkpoints sit in the same
mapped workdir, written through a local path.
"""

import json
import os

import numpy as np
import pytest
from etils.epath import testing as epath_testing
from PIL import Image

from helpers import nan_loss_from_step, tiny_config
from ltx import checkpointing, faults, files, trainer

BUCKET = "gs://bucket"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The local folder that gs://bucket/ maps to; the current folder is another one, which
    must stay empty (a bare os call on a gs:// path would create 'gs:/' there)."""
    root = tmp_path / "bucket"
    root.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def local(path):
        path = os.fspath(path)
        return str(root / path[len(BUCKET) + 1:]) if path.startswith(BUCKET) else path

    def one(original, path, *args, **kwargs):
        return original(local(path), *args, **kwargs)

    def two(original, path, target, *args, **kwargs):
        return original(local(path), local(target), *args, **kwargs)

    def back(path, asked):  # Found paths in the namespace they were asked for in.
        path = os.fspath(path)
        return path.replace(str(root), BUCKET, 1) if os.fspath(asked).startswith(BUCKET) else (
            path)

    def glob(original, pattern):
        return [back(p, pattern) for p in original(local(pattern))]

    def walk(original, top, **kwargs):
        for folder, dirs, names in original(local(top), **kwargs):
            yield back(folder, top), dirs, names

    monkeypatch.setattr(checkpointing, "orbax_path", local)
    with epath_testing.mock_epath(open=one, exists=one, isdir=one, listdir=one, makedirs=one,
                                  mkdir=one, remove=one, rmtree=one, stat=one, rename=two,
                                  replace=two, copy=two, glob=glob, walk=walk):
        yield root
    assert os.listdir(cwd) == [], "a bare os call wrote a gs:// path as a local one"


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_train_resume_evaluate_predict_and_sweep_table_on_a_gs_workdir(bucket, monkeypatch):
    from ltx import predict, report, sweep

    workdir = f"{BUCKET}/runs/balpoe"
    config = tiny_config(epochs=2)
    config.log_every_steps = 3
    # An interrupted first attempt: a NaN loss after the epoch-1 checkpoint (step 9 of 18).
    with monkeypatch.context() as patched:
        nan_loss_from_step(patched, 12)
        with pytest.raises(faults.Diverged):
            trainer.train_and_evaluate(config, workdir)
    local = bucket / "runs" / "balpoe"
    assert (local / "config.json").is_file() and (local / "checkpoints" / "9").is_dir()
    assert not (local / ".lock").exists()  # Released on the way out.
    assert [r["step"] for r in _records(local / "metrics.jsonl") if "loss" in r] == [3, 6, 9]

    final, resumed = trainer.train_and_evaluate(config, workdir)
    assert resumed.step == 18
    # Every step logged once although the object was rewritten at each flush.
    assert [r["step"] for r in _records(local / "metrics.jsonl") if "loss" in r] == [
        3, 6, 9, 12, 15, 18]
    assert json.loads((local / "final_metrics.json").read_text()) == final
    assert len((local / "launches.jsonl").read_text().splitlines()) == 2

    evaluated = report.evaluate_workdir(workdir, pictures=True)
    assert json.loads((local / "eval" / "report.json").read_text())["meta"]["workdir"] == (
        workdir)
    assert (local / "eval" / "report.md").is_file()
    assert any(name.endswith(".png") for name in os.listdir(local / "eval"))
    assert evaluated["uniform"]["ensemble"]["top1_all"] == pytest.approx(final["top1_all"])

    images = bucket / "images"
    images.mkdir()
    test = resumed.dataset.test
    for i in range(3):
        Image.fromarray(test.source[int(test.indices[i])]["image"][..., 0]).save(
            images / f"{i}.png")
    predictor = predict.Predictor.from_workdir(workdir)
    names, probs = predictor.predict_paths([f"{BUCKET}/images"])
    assert names == [f"{BUCKET}/images/{i}.png" for i in range(3)]
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-5)

    # A sweep root in the bucket: the table of a cell whose seed-1 run is the one above.
    seed_dir = f"{BUCKET}/sweep/digits_lt_balpoe/seed1"
    files.write_text(f"{seed_dir}/final_metrics.json",
                     (local / "final_metrics.json").read_text())
    rows = sweep.write_table(f"{BUCKET}/sweep", pictures=True)
    assert len(rows) == 1 and (bucket / "sweep" / "table.md").is_file()
    assert (bucket / "sweep" / "table.csv").is_file() and (bucket / "sweep" / "table.json").is_file()


def test_list_files_and_images_in_a_bucket_read_as_from_a_local_folder(bucket, tmp_path):
    from ltx.data import image_lists

    for root in (bucket / "tree", tmp_path / "tree"):
        for split, counts in (("train", (3, 2)), ("test", (1, 1))):
            for label, count in zip("ab", counts):
                folder = root / split / label
                folder.mkdir(parents=True)
                for k in range(count):
                    pixels = np.random.default_rng(hash((split, label, k)) % 1000).integers(
                        0, 255, (9, 7, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"{k}.png")
    remote = image_lists.write_folder_lists(f"{BUCKET}/tree")
    local = image_lists.write_folder_lists(str(tmp_path / "tree"))
    assert remote["classes"] == local["classes"] == ["a", "b"]
    assert (bucket / "tree" / "train.txt").read_text() == (tmp_path / "tree" / "train.txt"
                                                           ).read_text()
    built = [image_lists.image_list_dataset("list_files", num_classes=2, root=root, crop_size=8,
                                            eval_resize=8)
             for root in (f"{BUCKET}/tree", str(tmp_path / "tree"))]
    for split in ("train", "test"):
        a, b = getattr(built[0], split), getattr(built[1], split)
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            np.testing.assert_array_equal(a.source[i]["image"], b.source[i]["image"])
    (bucket / "tree" / "train" / "a" / "0.png").unlink()
    with pytest.raises(FileNotFoundError,
                       match=f"image {BUCKET}/tree/train/a/0.png does not exist"):
        built[0].train.source[0]


def test_a_lock_on_an_object_store_refuses_a_live_process_of_this_host(bucket):
    with faults.WorkdirLock(f"{BUCKET}/run"):
        assert (bucket / "run" / ".lock").is_file()
        with pytest.raises(faults.WorkdirBusy, match="on this host"):
            with faults.WorkdirLock(f"{BUCKET}/run"):
                pass
    assert not (bucket / "run" / ".lock").exists()
    # A lock left by a host that is gone (a preempted pod) is taken over with a warning.
    (bucket / "run" / ".lock").write_text("another-host 12345")
    with faults.WorkdirLock(f"{BUCKET}/run"):
        assert (bucket / "run" / ".lock").read_text() != "another-host 12345"


def test_whole_or_nothing_writes_and_appends_on_an_object_store(bucket):
    path = f"{BUCKET}/x/final_metrics.json"
    files.write_json(path, {"a": 1})
    assert json.loads((bucket / "x" / "final_metrics.json").read_text()) == {"a": 1}
    files.append_text(f"{BUCKET}/x/log.jsonl", "1\n")
    files.append_text(f"{BUCKET}/x/log.jsonl", "2\n")
    assert (bucket / "x" / "log.jsonl").read_text() == "1\n2\n"
    assert files.listdir(f"{BUCKET}/x") == ["final_metrics.json", "log.jsonl"]
    assert files.join(BUCKET, "x", "y") == f"{BUCKET}/x/y"
    assert files.dirname(f"{BUCKET}/x/y") == f"{BUCKET}/x"
    assert files.absolute(f"{BUCKET}/x") == f"{BUCKET}/x"


def test_checkpoint_files_to_import_are_read_from_a_bucket(bucket):
    from safetensors.numpy import save_file

    from ltx.convert import arrays

    weights = {"conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
               "fc.bias": np.ones(3, np.float32)}
    np.savez(bucket / "model.npz", **weights)
    save_file(weights, str(bucket / "model.safetensors"))
    for name in ("model.npz", "model.safetensors"):
        loaded = arrays.load_state_dict(f"{BUCKET}/{name}").arrays
        assert sorted(loaded) == sorted(weights)
        for key, value in weights.items():
            np.testing.assert_array_equal(np.asarray(loaded[key]), value)
