"""ltx.predict: probabilities from a checkpoint, prior correction, image folders, clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ltx import checkpointing, predict

from helpers import tiny_config


@pytest.fixture(scope="module")
def workdir(tiny_workdir):
    return tiny_workdir


@pytest.fixture(scope="module")
def predictor(workdir):
    return predict.Predictor.from_workdir(workdir)


@pytest.fixture(scope="module")
def test_images(predictor):
    """The first 40 uint8 test images of digits-LT and their labels."""
    split = predictor.dataset.test
    records = [split.source[int(i)] for i in split.indices[:40]]
    return np.stack([r["image"] for r in records]), split.labels[:40]


def test_probabilities_sum_to_one_and_match_run_evaluate(predictor, test_images):
    images, _ = test_images
    probs = predictor.predict_proba(images)
    assert probs.shape == (40, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    expert_logits = predictor.predictor.outputs("test")[0].logits
    mine_experts, mine = predictor.logits(images)
    np.testing.assert_allclose(mine_experts, expert_logits[:, :40], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mine, expert_logits[:, :40].mean(0), rtol=1e-4, atol=1e-4)
    # A single [H, W] image and a list of [H, W, 1] images give the same answer.
    np.testing.assert_allclose(predictor.predict_proba(images[0, ..., 0]), probs[:1],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_proba(list(images[:3])), probs[:3],
                               rtol=1e-5, atol=1e-6)


def test_prior_correction_shifts_predictions(predictor, test_images):
    images, _ = test_images
    _, logits = predictor.logits(images)
    prior = np.full(10, 0.01)
    prior[7] = 0.91
    corrected = predictor.predict_proba(images, target_prior=prior)
    expected = np.exp(logits + np.log(prior + 1e-9))
    np.testing.assert_allclose(corrected, expected / expected.sum(-1, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    plain = predictor.predict_proba(images)
    assert np.all(corrected[:, 7] >= plain[:, 7] - 1e-6)
    assert np.sum(corrected.argmax(-1) == 7) >= np.sum(plain.argmax(-1) == 7)
    uniform = predictor.predict_proba(images, target_prior=np.full(10, 0.1))
    np.testing.assert_allclose(uniform, plain, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prior, message", [
    ([0.5, 0.5], r"has 2 values .* 10 in all"),
    ([0.2] * 10, r"sums to 2; expected 1"),
    ([-0.1, 0.2] + [0.1125] * 8, "negative"),
])
def test_bad_prior_is_named(predictor, test_images, prior, message):
    with pytest.raises(ValueError, match=message) as err:
        predictor.predict_proba(test_images[0], target_prior=prior)
    assert "0.2" in str(err.value) or "0.5" in str(err.value)


@pytest.mark.slow
def test_folder_of_images_and_cli(workdir, predictor, test_images, tmp_path):
    images, labels = test_images
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        # Larger RGB files: converted to 8x8 grayscale on the way in.
        big = np.asarray(Image.fromarray(images[i, ..., 0]).resize((32, 32), Image.NEAREST))
        Image.fromarray(np.repeat(big[..., None], 3, -1)).save(folder / f"digit{i}.png")
    (folder / "notes.txt").write_text("not an image")
    files, probs = predictor.predict_paths([str(folder)])
    assert [os.path.basename(f) for f in files] == ["digit0.png", "digit1.png", "digit2.png"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)

    result = subprocess.run([sys.executable, "-m", "ltx.cli", "predict", f"--workdir={workdir}",
                             str(folder), "--top_k=3"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "digit" in line]
    assert len(lines) == 3
    top = predict.top_k(probs, 3)
    assert lines[0].endswith(", ".join(f"{c} ({p:.3f})" for c, p in top[0]))

    result = subprocess.run([sys.executable, "-m", "ltx.cli", "predict", f"--workdir={workdir}",
                             str(folder), "--prior=0.5,0.5"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and "has 2 values" in result.stderr


def test_unreadable_image_is_named(predictor, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(predict.ImageReadError, match="broken.png"):
        predictor.predict_paths([str(bad)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        predictor.predict_paths([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict_proba(np.zeros((8, 8), np.float32))


def test_incompatible_checkpoint_is_named(workdir):
    other = tiny_config()
    other.model.widths = (8, 16, 32)
    with pytest.raises(checkpointing.CheckpointMismatchError, match="widths"):
        predict.Predictor.from_workdir(workdir, config=other)
