"""Shared fixtures: one tiny trained digits-LT BalPoE run for the evaluation and prediction tests."""

import pytest

from helpers import tiny_config


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
    """Workdir of a finished 1-epoch run of `tiny_config()` (config.json, checkpoints/)."""
    from ltx import trainer

    path = str(tmp_path_factory.mktemp("tiny") / "run")
    trainer.train_and_evaluate(tiny_config(), path)
    return path
