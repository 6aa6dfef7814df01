"""Every finished workdir works with every tool: `ltx-eval`, `ltx-predict` and `ltx.stats` give
the method's final predictor, for each digits-LT config and for a method registered from outside.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from helpers import tiny_config
from ltx import methods, predict, report, stages, stats, workdirs

DIGITS_CONFIGS = sorted(
    name[:-3] for name in os.listdir(os.path.join(os.path.dirname(__file__), os.pardir, "configs"))
    if name.startswith("digits_lt_") and name.endswith(".py"))


def _test_images(dataset, count=12):
    split = dataset.test
    records = [split.source[int(i)] for i in split.indices[:count]]
    return np.stack([r["image"] for r in records])


def _check_workdir(workdir, final, method_name):
    """ltx-eval, ltx-predict and ltx.stats on a finished workdir agree with what it trained."""
    evaluated = report.evaluate_workdir(workdir, pictures=False)
    assert evaluated["meta"]["method"] == method_name
    # The report's predictor is the run's final model: the same test numbers as final_metrics.
    for key in ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece"):
        assert evaluated["uniform"]["ensemble"][key] == pytest.approx(final[key], abs=1e-4), key
    assert os.path.isfile(os.path.join(workdir, "eval", "report.md"))

    predictor = predict.Predictor.from_workdir(workdir)
    images = _test_images(predictor.dataset)
    probs = predictor.predict_proba(images)
    assert probs.shape == (len(images), predictor.num_classes)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    # Images through the prediction API = the same images through the evaluation path.
    _, logits, _ = predictor.predictor.predict("test")
    np.testing.assert_allclose(probs, jax.nn.softmax(logits[:len(images)], -1), atol=2e-5)

    numbers = stats.workdir_stats(workdir)
    assert numbers["method"] == method_name and numbers["params"] > 0 and numbers["gflops"] > 0
    return evaluated


@pytest.mark.slow
@pytest.mark.parametrize("name", DIGITS_CONFIGS)
def test_every_digits_config_trains_then_evaluates_and_predicts(name, tmp_path):
    config = tiny_config(name, epochs=1)
    workdir = str(tmp_path / name)
    final = stages.train(config, workdir)
    evaluated = _check_workdir(workdir, final, config.method.name)
    if name == "digits_lt_ride":  # The router cascade, with its experts per image.
        assert evaluated["method"]["avg_experts"] == pytest.approx(final["avg_experts"])
    if name == "digits_lt_cbe":  # The fused experts: every fusion reported, as the run printed.
        with open(os.path.join(workdir, "fusion.json")) as f:
            printed = json.load(f)
        for split in ("test", "val"):
            for fusion, row in printed[split].items():
                for key, value in row.items():
                    assert evaluated["fusions"][split][fusion][key] == pytest.approx(
                        value, abs=1e-4), (split, fusion, key)
        assert evaluated["meta"]["prior_correction"] is False
    if name in ("digits_lt_ce", "digits_lt_la"):  # Named as the literature names them.
        assert final["method"] == name.split("_")[-1]


def _label_smoothing(method_config, class_counts):
    """A toy eleventh method: one expert trained with label-smoothed cross-entropy."""
    del class_counts
    smoothing = float(method_config.smoothing)

    def loss(outputs, labels, epoch):
        del epoch
        logits = outputs.logits[0]
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
        return jnp.mean(optax.softmax_cross_entropy(logits, targets))

    return dict(num_experts=1, loss=loss, correct_prior=methods.balanced_prior_correction)


def test_a_method_registered_from_outside_trains_evaluates_and_predicts(tmp_path):
    if "label_smoothing" not in methods.names():
        methods.register("label_smoothing", _label_smoothing)
    config = tiny_config("digits_lt_ce", epochs=1)
    config.method = ml_collections.ConfigDict(dict(name="label_smoothing", num_experts=1,
                                                   smoothing=0.1))
    workdir = str(tmp_path / "ls")
    final = stages.train(config, workdir)
    assert final["method"] == "label_smoothing"
    _check_workdir(workdir, final, "label_smoothing")
    with pytest.raises(ValueError, match="already registered"):
        methods.register("label_smoothing", _label_smoothing)


def test_restore_run_refuses_a_multi_stage_workdir(tmp_path):
    config = tiny_config("digits_lt_ride", epochs=1)
    workdir = str(tmp_path / "ride")
    workdirs.write_config(workdir, config)
    with pytest.raises(ValueError, match="multi-stage run"):
        workdirs.restore_run(workdir)
