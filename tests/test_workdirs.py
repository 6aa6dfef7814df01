"""Every finished workdir works with every tool: `ltx-eval`, `ltx-predict` and `ltx.stats` give
the method's final predictor (each digits-LT config: tests/test_every_config.py; here a method
registered from outside).
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from helpers import check_finished_workdir, tiny_config
from ltx import methods, predict, report, stages, stats, workdirs

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


@pytest.mark.slow
def test_a_method_registered_from_outside_trains_evaluates_and_predicts(tmp_path):
    if "label_smoothing" not in methods.names():
        methods.register("label_smoothing", _label_smoothing)
    config = tiny_config("digits_lt_ce", epochs=1)
    config.method = ml_collections.ConfigDict(dict(name="label_smoothing", num_experts=1,
                                                   smoothing=0.1))
    workdir = str(tmp_path / "ls")
    final = stages.train(config, workdir)
    assert final["method"] == "label_smoothing"
    check_finished_workdir(workdir, final, "label_smoothing")
    with pytest.raises(ValueError, match="already registered"):
        methods.register("label_smoothing", _label_smoothing)


def test_restore_run_refuses_a_multi_stage_workdir(tmp_path):
    config = tiny_config("digits_lt_ride", epochs=1)
    workdir = str(tmp_path / "ride")
    workdirs.write_config(workdir, config)
    with pytest.raises(ValueError, match="multi-stage run"):
        workdirs.restore_run(workdir)
