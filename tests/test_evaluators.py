"""Evaluators named in config.evals (ltx.evaluators): the order of a report's parts, one
registered from outside the package, those that do not apply, and their settings' checks."""

import numpy as np
import pytest

from helpers import tiny_config
from ltx import config_check, evaluators, methods, report, workdirs


def test_the_default_evals_of_a_gla_ensemble_and_the_report_order(tiny_workdir):
    evaluated = report.evaluate_workdir(tiny_workdir, pictures=False)
    # BalPoE's three gLA experts: its home's 'expert_priors' applies; it has no 'method' numbers.
    assert evaluated["meta"]["evals"] == ["uniform", "shifted", "expert_priors"]
    assert list(evaluated)[1:] == ["uniform", "per_class", "distributions", "expert_priors"]
    markdown = report.format_markdown(evaluated)
    assert markdown.index("## Uniform test set") < markdown.index("## Test-agnostic protocol")


def test_an_evaluator_registered_from_outside_runs_with_its_settings(tiny_workdir):
    seen = {}

    def count_wrong(ctx, weight=1.0):
        seen["settings"] = dict(ctx.settings)
        wrong = int(np.sum(ctx.logits.argmax(-1) != ctx.labels))
        return {"wrong": {"count": wrong * weight}, "meta": {"wrong_weight": weight}}

    methods.register_evaluator("count_wrong", evaluators.Evaluator(
        count_wrong, markdown=lambda r: ["## Wrong", f"{r['wrong']['count']:g}"], order=5))
    try:
        evaluated = report.evaluate_workdir(tiny_workdir, pictures=False,
                                            evals={"count_wrong": {"weight": 2.0}})
        markdown = report.format_markdown(evaluated)
    finally:
        methods._EXTRA_EVALUATORS.pop("count_wrong")
    predictor = workdirs.final_predictor(tiny_workdir)
    _, logits, labels = predictor.predict("test")
    assert evaluated["wrong"]["count"] == 2 * int(np.sum(logits.argmax(-1) != labels))
    assert evaluated["meta"]["wrong_weight"] == 2.0
    assert evaluated["meta"]["evals"][:2] == ["uniform", "count_wrong"]  # order=5.
    assert seen["settings"]["count_wrong"] == {"weight": 2.0}
    assert markdown.index("## Uniform") < markdown.index("## Wrong") < markdown.index(
        "## Test-agnostic")


def test_asking_for_one_that_does_not_apply_or_does_not_exist_is_refused(tiny_workdir):
    with pytest.raises(ValueError, match="evaluator 'method' does not apply: method 'balpoe' "
                                         "has no evaluators of its own"):
        report.evaluate_workdir(tiny_workdir, pictures=False,
                                evals={"method": {}, "uniform": {}})
    with pytest.raises(ValueError, match=r"unknown evaluator 'nope'; expected one of \["):
        report.resolve_evals(workdirs.load_config(tiny_workdir), {"nope": {}})
    with pytest.raises(ValueError, match=r"evals.shifted.max_per_class=0"):
        report.resolve_evals(workdirs.load_config(tiny_workdir), {"shifted": {
            "max_per_class": 0}})


def test_config_check_names_bad_evals():
    config = tiny_config()
    with config.unlocked():
        config.evals.shifted.factors = (0.5,)
        config.evals.test_time_aggregation = {"epochs": -1}
    with pytest.raises(ValueError) as err:
        config_check.check(config)
    message = str(err.value)
    assert "config.evals.shifted: evals.shifted.factors=(0.5,)" in message
    assert "config.evals.test_time_aggregation: test-time aggregation settings" in message
