"""Evaluators named in config.evals (ltx.evaluators): the order of a report's parts, one
registered from outside the package, those that do not apply, and their settings' checks."""

import numpy as np
import pytest

from helpers import tiny_config
from ltx import config_check, evaluators, methods, report, workdirs


@pytest.mark.slow
def test_the_default_evals_of_a_gla_ensemble_and_the_report_order(tiny_workdir):
    evaluated = report.evaluate_workdir(tiny_workdir, pictures=False)
    # BalPoE's three gLA experts: its home's 'expert_priors' applies; RIDE's 'routing' does not.
    assert evaluated["meta"]["evals"] == ["uniform", "shifted", "expert_priors"]
    assert list(evaluated)[1:] == ["uniform", "per_class", "distributions", "expert_priors"]
    markdown = report.format_markdown(evaluated)
    assert markdown.index("## Uniform test set") < markdown.index("## Test-agnostic protocol")


@pytest.mark.slow
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


@pytest.mark.slow
def test_asking_for_one_that_does_not_apply_or_does_not_exist_is_refused(tiny_workdir):
    with pytest.raises(ValueError, match="evaluator 'routing' does not apply: method 'balpoe' "
                                         "has no expert-assignment router"):
        report.evaluate_workdir(tiny_workdir, pictures=False,
                                evals={"routing": {}, "uniform": {}})
    with pytest.raises(ValueError, match="evaluator 'fusions' does not apply: method 'balpoe' "
                                         "is not the fused class-balanced experts"):
        report.evaluate_workdir(tiny_workdir, pictures=False, evals={"fusions": {}})
    with pytest.raises(ValueError, match=r"unknown evaluator 'nope'; expected one of \["):
        report.resolve_evals(workdirs.load_config(tiny_workdir), {"nope": {}})
    with pytest.raises(ValueError, match=r"evals.shifted.max_per_class=0"):
        report.resolve_evals(workdirs.load_config(tiny_workdir), {"shifted": {
            "max_per_class": 0}})


def test_a_config_json_of_an_older_version_names_the_evaluators_of_this_one():
    # Before stop 38 RIDE's numbers were the 'method' evaluator, and the fused experts' tables
    # were in every report without a name.
    config = tiny_config("digits_lt_balpoe")
    config.evals = {"uniform": {}, "method": {}}
    assert methods.configured_evaluators(config) == {"uniform": {}, "routing": {},
                                                     "fusions": {}}
    assert sorted(methods.configured_evaluators(tiny_config("digits_lt_balpoe"))) == [
        "expert_priors", "fusions", "routing", "shifted", "uniform"]


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


@pytest.mark.slow
def test_the_periodic_evaluation_equals_the_post_hoc_one_of_the_same_checkpoint(tmp_path):
    """Training's evaluation at epoch 1 (metrics.jsonl 'val/...': digits-LT has a val split) and
    the restored epoch-1 checkpoint's are the same numbers; the final metrics of training and
    ltx-eval's 'uniform' evaluator of the last checkpoint agree too."""
    import json

    from ltx import trainer

    config = tiny_config("digits_lt_sade", epochs=2)
    config.eval.every_epochs = 1
    config.checkpoint.every_epochs = 1
    config.checkpoint.max_to_keep = 3
    workdir = tmp_path / "run"
    trainer.train_and_evaluate(config, str(workdir))
    periodic = [json.loads(line) for line in open(workdir / "metrics.jsonl")
                if '"val/top1_all"' in line]
    assert len(periodic) == 1 and periodic[0]["step"] == 9  # 544 images / 64 a step.
    post_hoc = workdirs.restore_run(str(workdir), step=9).evaluate("val")
    keys = ("top1_all", "top1_many", "top1_medium", "top1_few", "nll", "ece", "mce", "brier",
            "top1_expert0", "top1_expert2")
    for key in keys:
        assert periodic[0][f"val/{key}"] == pytest.approx(post_hoc[key], rel=1e-6, abs=1e-9), key
    evaluated = report.evaluate_workdir(str(workdir), pictures=False)
    final = json.load(open(workdir / "final_metrics.json"))
    assert evaluated["meta"]["step"] == final["steps"] == 18
    for key in keys:
        assert final[key] == pytest.approx(evaluated["uniform"]["ensemble"][key], rel=1e-6,
                                           abs=1e-9), key
    assert periodic[0]["val/nll"] != pytest.approx(final["val_nll"])  # Two checkpoints.


@pytest.mark.slow
def test_an_evaluator_with_metrics_runs_in_training_and_in_ltx_eval(tmp_path):
    """An evaluator registered from outside the package (this file is all it takes) with
    `metrics` and named in the config: its numbers join training's periodic and final metrics
    and ltx-eval's report, and the two agree."""
    import json

    from ltx import trainer

    def wrong(outputs, labels, dataset, config, weight=1.0):
        mean = np.asarray(outputs.logits).mean(0)
        return {"wrong_weighted": weight * float(np.sum(mean.argmax(-1) != labels))}

    methods.register_evaluator("wrong", evaluators.Evaluator(metrics=wrong, order=5))
    workdir = tmp_path / "run"
    try:
        config = tiny_config(epochs=2)
        with config.unlocked():
            config.evals.wrong = {"weight": 2.0}
            config.eval.every_epochs = 1
        trainer.train_and_evaluate(config, str(workdir))
        evaluated = report.evaluate_workdir(str(workdir), pictures=False)
    finally:
        methods._EXTRA_EVALUATORS.pop("wrong")
    periodic = [json.loads(line) for line in open(workdir / "metrics.jsonl")
                if '"val/wrong_weighted"' in line]
    assert len(periodic) == 1 and periodic[0]["val/wrong_weighted"] % 2 == 0
    final = json.load(open(workdir / "final_metrics.json"))
    outputs, _, labels = workdirs.final_predictor(str(workdir)).predict("test")
    expected = 2.0 * np.sum(np.asarray(outputs.logits).mean(0).argmax(-1) != labels)
    assert final["wrong_weighted"] == evaluated["wrong"]["wrong_weighted"] == expected
    assert evaluated["meta"]["evals"][:2] == ["uniform", "wrong"]
