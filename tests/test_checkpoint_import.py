"""ltx.checkpoint_import (`ltx-import`) and `model.init_checkpoint` from a PyTorch file: a
torchvision ResNet-10 checkpoint on a tiny ImageNet-LT tree generated here, and the official
RIDE CIFAR-100 checkpoint of tests/fixtures/torch.

The ResNet-10 case is not the official torchvision file: its 5.4 M float32 weights (21.7 MB,
almost all in the backbone, which every logit depends on) do not fit the fixtures' size budget,
and no subset of it keeps the official logits. Instead the test writes a state_dict in
torchvision's layout (names, order, shapes; drawn, BatchNorm off its init) as torch.save lays it
out, and compares ltx with tests/fixtures/torch/torchvision_reference.py, torchvision's ResNet
forward written in NumPy from torchvision's architecture (its README.md says how it was checked
against the official torchvision output).
"""

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import torch_files as tf
from helpers import CONFIG_DIR, load_config
from ltx import (checkpoint_import, checkpointing, config_lib, parts as parts_lib, predict,
                 report, stats, steps, trainer)

FIXTURES = Path(__file__).parent / "fixtures" / "torch"


def _torchvision_reference():
    """tests/fixtures/torch/torchvision_reference.py (a file of the fixtures, not a package)."""
    spec = importlib.util.spec_from_file_location("torchvision_reference",
                                                  FIXTURES / "torchvision_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torchvision(tmp_path_factory):
    """The ResNet-10 case: `path` (the .pth), `x` [2, 64, 64, 3] (NHWC) and `logits` [2, 1000]
    of the NumPy reference."""
    state_dict, x, logits = _torchvision_reference().case()
    path = tmp_path_factory.mktemp("torchvision") / "resnet10.pth"
    tf.save(path, {k: tf.tensor(str(i), v) for i, (k, v) in enumerate(state_dict.items())})
    return types.SimpleNamespace(path=str(path), x=x.transpose(0, 2, 3, 1), logits=logits)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """ImageNet-LT list files over 8 JPEGs of classes 0-3 (of 1000)."""
    root = tmp_path_factory.mktemp("imagenet_lt")
    rng = np.random.default_rng(0)
    entries = {"train": [], "val": [], "test": []}
    for i, (split, label) in enumerate([("train", 0), ("train", 0), ("train", 1), ("train", 2),
                                        ("val", 1), ("test", 0), ("test", 3), ("test", 2)]):
        rel = f"{split}/{i}.jpg"
        (root / split).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / rel)
        entries[split].append(f"{rel} {label}\n")
    for split, lines in entries.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("".join(lines))
    return root


def _small(config, tree):
    """`config` on the 8-image tree: 32-pixel crops, batches of 4."""
    config.data.root = str(tree)
    config.data.num_workers = 0
    config.data.augment.crop_size = 32  # Any size works for a ResNet; small keeps it fast.
    config.data.augment.eval_resize = 36
    config.batch_size = 4
    config.eval.batch_size = 4
    config.checkpoint.async_save = False
    return config


def resnet10_config(tree):
    config = load_config("imagenet_lt_ce", "arch=resnet10,epochs=1")
    config.model.head = "linear"  # torchvision's fc.
    return _small(config, tree)


@pytest.mark.slow
def test_init_checkpoint_from_a_pth_starts_from_its_weights(tree, torchvision, tmp_path):
    config = resnet10_config(tree)
    config.model.init_checkpoint = torchvision.path
    parts = parts_lib.build(config)
    state = trainer.initial_state(config, parts, parts_lib.make_plan(config, parts),
                                  steps.make_mesh())
    x, logits = torchvision.x, torchvision.logits
    out = parts.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                            jnp.asarray(x), train=False)
    np.testing.assert_allclose(np.asarray(out)[0], logits, rtol=1e-5,
                               atol=1e-5 * np.abs(logits).max())
    # The first train step starts from those weights (its loss is that of the torch model).
    _, trained = trainer.train_and_evaluate(config, str(tmp_path / "run"), parts=parts)
    assert trained.step == 1


@pytest.mark.slow
def test_imported_workdir_evaluates_predicts_and_resumes(tree, torchvision, tmp_path):
    config = resnet10_config(tree)
    workdir = str(tmp_path / "imported")
    summary = checkpoint_import.import_checkpoint(torchvision.path, config, workdir)
    assert summary["broadcast"] == [] and len(summary["copied"]) == 62
    assert all("num_batches_tracked" in name for name in summary["skipped"])
    assert os.path.isfile(os.path.join(workdir, checkpoint_import.REPORT_FILE))

    evaluated = report.evaluate_workdir(workdir, pictures=False)
    assert evaluated["meta"]["step"] == 0 and evaluated["meta"]["test_images"] == 3
    predictor = predict.Predictor.from_workdir(workdir)
    x, logits = torchvision.x, torchvision.logits
    _, out = predictor.predictor.predict_images(x)
    np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())
    assert stats.workdir_stats(workdir)["params"] == 5_418_792  # torchvision's ResNet-10.

    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        checkpoint_import.import_checkpoint(torchvision.path, config, workdir)
    # ltx-train with the same config fine-tunes the imported model: it resumes from step 0.
    final, _ = trainer.train_and_evaluate(config, workdir)
    assert final["steps"] == 1


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_refused_before_anything_is_written(tree, torchvision,
                                                                             tmp_path):
    config = resnet10_config(tree)
    config.model.name = "resnet50"
    workdir = tmp_path / "wrong"
    with pytest.raises(ValueError, match="shape"):
        checkpoint_import.import_checkpoint(torchvision.path, config, str(workdir))
    assert not (workdir / "checkpoints").exists()


@pytest.mark.slow
def test_cli_without_the_dataset_then_predict(tree, torchvision, tmp_path):
    """`ltx-import --class_counts=<training list>` with no data location, then `ltx-predict` on
    an image: neither reads the dataset (its folder is not given), and the prediction is the
    reference model's."""
    workdir, lists = tmp_path / "cli", tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text((tree / "ImageNet_LT_train.txt").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "ltx.cli", "import",
         f"--config={os.path.join(CONFIG_DIR, 'imagenet_lt_ce.py')}:arch=resnet10",
         "--config.model.head=linear", "--config.data.augment.crop_size=32",
         "--config.data.augment.eval_resize=36", f"--checkpoint={torchvision.path}",
         f"--class_counts={lists / 'train.txt'}", f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Imported" in result.stdout and (workdir / "config.json").is_file()
    counts = parts_lib.recorded_class_counts(str(workdir))
    assert counts.tolist() == [2, 1, 1] + [0] * 997  # The training list's labels 0, 0, 1, 2.

    image = np.random.default_rng(3).integers(0, 256, (36, 36, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "mine.png")
    result = subprocess.run([sys.executable, "-m", "ltx.cli", "predict", f"--workdir={workdir}",
                             str(tmp_path / "mine.png"), "--top_k=1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    predictor = predict.Predictor.from_workdir(str(workdir))
    assert predictor.dataset.train is None  # Restored from dataset.json, no split read.
    best = int(np.argmax(predictor.predict_proba(image[None])[0]))
    assert result.stdout.strip().startswith(f"{tmp_path / 'mine.png'}: {best} (")


def test_class_counts_are_read_from_a_list_a_json_list_or_uniform(tmp_path):
    config = load_config("imagenet_lt_ce", "arch=resnet10,epochs=1")
    listed = tmp_path / "train.txt"
    listed.write_text("a.jpg 3\nb.jpg 3\n\nc.jpg 999\n")
    counts = checkpoint_import.read_class_counts(str(listed), config)
    assert counts.shape == (1000,) and counts[3] == 2 and counts[999] == 1 and counts.sum() == 3
    given = tmp_path / "counts.json"
    given.write_text(str(list(range(1000))))
    assert checkpoint_import.read_class_counts(str(given), config).tolist() == list(range(1000))
    assert checkpoint_import.read_class_counts("uniform", config).tolist() == [1] * 1000
    assert checkpoint_import.read_class_counts("", config) is None
    given.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON list of 1000 non-negative integers"):
        checkpoint_import.read_class_counts(str(given), config)
    listed.write_text("a.jpg 1000\n")
    with pytest.raises(ValueError, match=r"line 1: 'a.jpg 1000'; expected 'path label' with a "
                                         r"label in \[0, 1000\)"):
        checkpoint_import.read_class_counts(str(listed), config)
    with pytest.raises(FileNotFoundError, match="neither 'uniform' nor a file"):
        checkpoint_import.read_class_counts(str(tmp_path / "missing.txt"), config)


@pytest.fixture(scope="module")
def hundred_classes(tmp_path_factory):
    """A 'list_files' dataset of 100 classes: one 32x32 training image per class, 12 test."""
    root = tmp_path_factory.mktemp("list_files")
    rng = np.random.default_rng(1)
    (root / "img").mkdir()
    lines = {"train": [], "test": []}
    for i, (split, label) in enumerate([("train", c) for c in range(100)]
                                       + [("test", c) for c in range(0, 96, 8)]):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / "img" / f"{i}.png")
        lines[split].append(f"img/{i}.png {label}\n")
    for split, entries in lines.items():
        (root / f"{split}.txt").write_text("".join(entries))
    return root


@pytest.mark.slow
def test_official_ride_checkpoint_imports_into_its_stage_and_evaluates(hundred_classes,
                                                                       tmp_path):
    """RIDE's CIFAR-100 checkpoint into the experts stage of configs/cifar100_lt_ride.py, on a
    100-class list-file dataset: ltx-eval and ltx-predict run, and the model is the official."""
    config = load_config("cifar100_lt_ride")
    config = config_lib.add_list_file_data(config, "list_files", root=str(hundred_classes))
    config.data.num_classes = 100
    config.data.num_workers = 0
    config.data.augment.crop_size = 32
    config.data.augment.eval_resize = 32
    config.eval.batch_size = 4
    workdir = str(tmp_path / "ride")
    summary = checkpoint_import.import_checkpoint(
        str(FIXTURES / "ride_resnet32_c100_3experts.pth"), config, workdir, stage="experts")
    assert summary["container"] == "state_dict" and len(summary["copied"]) == 156
    assert len(summary["skipped"]) == 71  # The BatchNorm step counters, each named.
    assert all(name.endswith("num_batches_tracked") for name in summary["skipped"])

    evaluated = report.evaluate_workdir(workdir, pictures=False)
    assert evaluated["meta"]["method"] == "ride" and evaluated["meta"]["num_experts"] == 3
    predictor = predict.Predictor.from_workdir(workdir)
    files, probs = predictor.predict_paths([str(hundred_classes / "img")])
    assert probs.shape == (112, 100)
    with np.load(FIXTURES / "ride_resnet32_c100_3experts.npz") as z:
        experts, logits = predictor.predictor.predict_images(z["x"].transpose(0, 2, 3, 1))
        scale = np.abs(z["logits"]).max()
        np.testing.assert_allclose(experts, z["expert_logits"], rtol=1e-5, atol=1e-5 * scale)
        np.testing.assert_allclose(logits, z["logits"], rtol=1e-5, atol=1e-5 * scale)
    with pytest.raises(ValueError, match=r"--stage='nope'; expected one of the config's stages"):
        checkpoint_import.import_checkpoint(
            str(FIXTURES / "ride_resnet32_c100_3experts.pth"), config, str(tmp_path / "other"),
            stage="nope")



@pytest.mark.slow
def test_crt_trains_its_classifier_on_an_imported_pytorch_joint_model(tree, torchvision,
                                                                      tmp_path):
    """A decoupled stage 2 from an official joint checkpoint: torchvision's ResNet-10 imported
    into the joint stage of the cRT config, then cRT from it (`base=`): the trunk is the imported
    one, bit for bit, and only the re-initialised classifier trains."""
    imported = str(tmp_path / "joint")
    joint = _small(load_config("imagenet_lt_ce_crt", "arch=resnet10,epochs=9"), tree)
    checkpoint_import.import_checkpoint(torchvision.path, joint, imported, stage="joint")
    crt = _small(load_config("imagenet_lt_ce_crt", f"arch=resnet10,epochs=9,base={imported}"),
                 tree)
    assert crt.method.name == "crt" and crt.model.init_checkpoint == imported
    _, predictor = trainer.train_and_evaluate(crt, str(tmp_path / "crt"))
    assert predictor.step >= 1
    before = checkpointing.load_pretrained(imported)["params"]
    after = jax.device_get(predictor.variables["params"])
    flat_before = dict(jax.tree_util.tree_leaves_with_path(before))
    changed = []
    for path, value in jax.tree_util.tree_leaves_with_path(after):
        if not np.array_equal(value, flat_before[path]):
            changed.append(jax.tree_util.keystr(path))
    assert changed and all("head" in name for name in changed), changed
