"""ltx.report (ltx-eval): the report and pictures of a finished run, shifted test sets, the
prior correction."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ltx import metrics, report as evaluate, workdirs

from helpers import tiny_config

PICTURES = ("reliability.png", "per_class_accuracy.png", "test_distributions.png",
            "expert_priors.png")


@pytest.fixture(scope="module")
def workdir(tiny_workdir):
    return tiny_workdir


@pytest.fixture(scope="module")
def report(workdir):
    return evaluate.evaluate_workdir(workdir)


def expected_counts(head, num_classes, factor, reverse):
    """The exponential profile written out here, independently of ltx.data.long_tail."""
    counts = []
    for i in range(num_classes):
        exponent = (num_classes - 1 - i) if reverse else i
        counts.append(int(head * (1.0 / factor) ** (exponent / (num_classes - 1))))
    return counts


def test_writes_report_and_pictures(workdir, report):
    out = os.path.join(workdir, "eval")
    with open(os.path.join(out, "report.json")) as f:
        saved = json.load(f)
    assert saved["meta"]["step"] == report["meta"]["step"] > 0
    assert saved["meta"]["num_experts"] == 3
    ensemble = saved["uniform"]["ensemble"]
    for key in ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece", "mce",
                "brier"):
        assert isinstance(ensemble[key], float), key
    assert len(saved["uniform"]["experts"]) == 3
    assert "ece" in saved["uniform"]["experts"][2]
    markdown = open(os.path.join(out, "report.md")).read()
    assert "| **ensemble** |" in markdown and "expert 2 (lambda -1)" in markdown
    assert "backward-50" in markdown and "forward-50" in markdown
    for name in PICTURES:
        data = open(os.path.join(out, name), "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert "routing" not in saved  # BalPoE has no router; nothing is invented.
    priors = saved["expert_priors"]
    np.testing.assert_allclose(np.sum(priors["estimated"], 1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(priors["expected"][1], 0.1, rtol=1e-6)  # lambda 0: uniform.


@pytest.fixture(scope="module")
def run(workdir):
    return workdirs.restore_run(workdir)


def test_uniform_numbers_equal_run_evaluate(run, report):
    direct = run.evaluate("test")
    for key in ("top1_all", "top1_few", "nll", "ece", "top1_expert1"):
        np.testing.assert_allclose(report["uniform"]["ensemble"][key], direct[key], rtol=1e-5)
    np.testing.assert_allclose(report["uniform"]["experts"][1]["top1_all"],
                               direct["top1_expert1"], rtol=1e-6)


def test_shifted_test_sets_have_the_profile_counts(report):
    # digits-LT: 30 test images per class, so the head class of every shifted set has 30.
    assert report["meta"]["test_distribution_head"] == 30
    dists = report["distributions"]
    assert list(dists)[:2] == ["forward-50", "forward-25"] and list(dists)[5] == "uniform"
    for factor in (2, 5, 10, 25, 50):
        forward = dists[f"forward-{factor}"]["class_counts"]
        backward = dists[f"backward-{factor}"]["class_counts"]
        assert forward == expected_counts(30, 10, factor, reverse=False)
        assert backward == expected_counts(30, 10, factor, reverse=True)
        assert backward == forward[::-1]
        assert dists[f"forward-{factor}"]["num_images"] == sum(forward)
    assert dists["uniform"]["class_counts"] == [30] * 10
    assert expected_counts(30, 10, 50, False)[-1] == 0  # The 0.6 -> 0 truncation is kept.


def test_subsets_are_seeded_and_class_pure():
    labels = np.repeat(np.arange(10), 30)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(labels.size)]
    a = evaluate.shifted_test_sets(labels, 10)
    b = evaluate.shifted_test_sets(labels, 10)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert len(np.unique(a[name])) == len(a[name])  # No image twice.
    counts = np.bincount(labels[a["backward-10"]], minlength=10)
    assert counts.tolist() == expected_counts(30, 10, 10, reverse=True)
    # CIFAR's cap: at most max_per_class images per class even when the test split has more.
    big = np.repeat(np.arange(4), 150)
    assert np.bincount(big[evaluate.shifted_test_sets(big, 4)["forward-2"]]).max() == 100


def test_corrected_accuracy_equals_adding_log_prior_by_hand(run, report):
    outputs, labels = run.outputs("test")
    expert_logits = outputs.logits
    logits = expert_logits.mean(0)
    idx = evaluate.shifted_test_sets(labels, 10)["backward-10"]
    sub_logits, sub_labels = logits[idx], labels[idx]
    prior = np.bincount(sub_labels, minlength=10) / len(sub_labels)
    by_hand = np.mean(np.argmax(sub_logits + np.log(prior + 1e-9), -1) == sub_labels)
    dist = report["distributions"]["backward-10"]
    np.testing.assert_allclose(dist["corrected"]["top1_samples"], 100 * by_hand, rtol=1e-6)
    plain = np.mean(np.argmax(sub_logits, -1) == sub_labels)
    np.testing.assert_allclose(dist["plain"]["top1_samples"], 100 * plain, rtol=1e-6)
    nll = float(metrics.negative_log_likelihood(sub_logits + np.log(prior + 1e-9), sub_labels))
    np.testing.assert_allclose(dist["corrected"]["nll"], nll, rtol=1e-4)


def test_bad_shot_convention_is_named(workdir):
    with pytest.raises(ValueError, match="unknown shot convention 'nope'"):
        evaluate.evaluate_workdir(workdir, shot_convention="nope", pictures=False)


def test_config_json_roundtrip_gives_tuples(workdir):
    config = workdirs.load_config(workdir)
    assert config.model.widths == (4, 8, 16)
    assert config.method.lambdas == (1.0, 0.0, -1.0)


def test_missing_workdir_and_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        evaluate.evaluate_workdir(str(tmp_path))
    with open(tmp_path / "config.json", "w") as f:
        f.write(tiny_config().to_json())
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        evaluate.evaluate_workdir(str(tmp_path))


@pytest.mark.slow
def test_cli(workdir):
    result = subprocess.run([sys.executable, "-m", "ltx.cli", "eval", f"--workdir={workdir}",
                             "--shot_convention=ace", "--nopictures"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| **ensemble** |" in result.stdout and "`ace`" in result.stdout
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        meta = json.load(f)["meta"]
    assert meta["shot_convention"] == "ace" and "n <= 20" in meta["shot_rule"]
