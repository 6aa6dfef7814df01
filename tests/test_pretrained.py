"""Initialising a model from another run's checkpoint (`model.init_checkpoint`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config

from ltx import checkpointing, config_check, parts as parts_lib, steps, trainer
from ltx.models.multi_expert import MultiExpertResNet


def _initial_state(config):
    """`config`'s initial train state with `model.init_checkpoint` loaded into it."""
    parts = parts_lib.build(config)
    return trainer.initial_state(config, parts, parts_lib.make_plan(config, parts),
                                 steps.make_mesh())


def _variables(model):
    return model.init(jax.random.key(0, impl="rbg"), jnp.zeros((2, 8, 8, 1)), train=False)


def _tiny(**kwargs):
    return MultiExpertResNet(num_classes=10, widths=(4, 8, 16), blocks_per_stage=1,
                             head="cosine", expert_strategy="scan", **kwargs)


@pytest.mark.slow
def test_a_single_backbone_initialises_every_expert():
    # Source: one expert with every stage shared (a plain backbone); target: 3 experts that
    # own stages 1-2, as SADE copies ImageNet-pretrained layer3/layer4 into every expert.
    source_model = _tiny(num_experts=1, num_shared_stages=3)
    target_model = _tiny(num_experts=3, num_shared_stages=1, scan_unroll=3)
    source = jax.tree.map(lambda x: x + 0.1, _variables(source_model))  # Not the init values.
    target = _variables(target_model)

    params, report = checkpointing.transplant(target["params"], source["params"])
    stats, _ = checkpointing.transplant(target["batch_stats"], source["batch_stats"])
    assert "stem/conv/kernel" in report["copied"]
    assert "experts/stage2/block0/conv1/kernel" in report["broadcast"]
    assert "experts/head/kernel" in report["broadcast"]  # [1, F, C] -> [3, F, C]
    assert not report["kept"]

    images = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    expected = source_model.apply(source, images, train=False)  # [1, B, C]
    got = target_model.apply({"params": params, "batch_stats": stats}, images, train=False)
    for k in range(3):
        np.testing.assert_allclose(got[k], expected[0], rtol=1e-5, atol=1e-5)


def test_a_head_with_other_classes_keeps_its_initial_value():
    source = _variables(_tiny(num_experts=1))["params"]
    target_model = MultiExpertResNet(num_classes=7, widths=(4, 8, 16), blocks_per_stage=1,
                                     num_experts=2, head="cosine", expert_strategy="scan",
                                     scan_unroll=2)
    target = _variables(target_model)["params"]
    params, report = checkpointing.transplant(target, source)
    assert report["kept"] == ["experts/head/kernel"]
    np.testing.assert_array_equal(params["experts"]["head"]["kernel"],
                                  target["experts"]["head"]["kernel"])


def test_an_unrelated_checkpoint_is_rejected():
    target = _variables(_tiny(num_experts=1))["params"]
    with pytest.raises(ValueError, match="shares no parameter"):
        checkpointing.transplant(target, {"other": {"kernel": np.zeros((3, 3))}})


@pytest.mark.slow
def test_run_starts_from_a_previous_run(tmp_path):
    config = tiny_config("digits_lt_ce", epochs=1)
    _, first = trainer.train_and_evaluate(config, str(tmp_path / "ce"))

    second_config = tiny_config("digits_lt_balpoe", epochs=1)
    second_config.model.init_checkpoint = str(tmp_path / "ce")
    state = _initial_state(second_config)
    trained = jax.device_get(first.variables["params"])
    np.testing.assert_array_equal(state.params["stem"]["conv"]["kernel"],
                                  trained["stem"]["conv"]["kernel"])
    for k in range(3):
        np.testing.assert_array_equal(state.params["experts"]["head"]["kernel"][k],
                                      trained["experts"]["head"]["kernel"][0])
    assert int(state.step) == 0

    second_config.model.init_checkpoint = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="config.model.init_checkpoint=.*missing"):
        config_check.check(second_config)  # Before any model is built.
    (tmp_path / "empty").mkdir()
    second_config.model.init_checkpoint = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="holds no ltx checkpoint"):
        _initial_state(second_config)
