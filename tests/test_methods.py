"""The method registry (`ltx.methods`): building a method from its config, with its checks."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import CONFIG_DIR

from ltx import methods

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def test_declared_expert_count_must_match_the_method():
    with pytest.raises(ValueError, match="num_experts=2 but method 'sade' builds 3"):
        methods.build(ml_collections.ConfigDict(dict(name="sade", num_experts=2, tau=2.0)),
                      COUNTS)
    with pytest.raises(ValueError, match="method.name='lfme'"):
        methods.build(ml_collections.ConfigDict(dict(name="lfme")), COUNTS)


def _digits_methods():
    """(id, method, dataset) of every digits-LT config and each of its stages."""
    from helpers import load_config

    from ltx import config_lib
    from ltx.data import datasets
    base = datasets.build(load_config("digits_lt_ce").data)
    found = []
    for name in sorted(os.listdir(CONFIG_DIR)):
        if not name.startswith("digits_lt_"):
            continue
        config = load_config(name[:-3])
        stages = [(s, c) for s, c, _ in config_lib.stage_configs(config)] or [("", config)]
        for stage, cfg in stages:
            dataset = methods.dataset_view(cfg, base)
            found.append((f"{name[:-3]}:{stage}", methods.build(cfg.method, dataset.class_counts),
                          dataset))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 10_000])  # 10_000: after every DRW / router switch.
def test_every_loss_of_a_padded_batch_is_the_loss_of_its_real_rows(epoch):
    """The trainer pads an epoch's smaller last batch to B rows with `Outputs.mask`: every
    method's loss (and its gradient) must then be that of the real rows alone, whatever the
    padding holds."""
    checked = 0
    for label, method, dataset in _digits_methods():
        rng = np.random.default_rng(checked)
        real, pad = 11, 5
        experts, classes = method.num_experts, dataset.num_classes
        logits = rng.uniform(-30, 30, (experts, real + pad, classes)).astype(np.float32)
        logits[:, real:] = rng.uniform(-300, 300, (experts, pad, classes))  # Arbitrary rows.
        labels = rng.integers(0, classes, real + pad).astype(np.int32)
        router = method.model_additions.get("router")
        width = {"cascade": experts - 1, "instance": experts}.get(router)
        router_out = (None if width is None
                      else rng.normal(size=(real + pad, width)).astype(np.float32))
        teacher = rng.normal(size=(real + pad, classes)).astype(np.float32) * 5
        mask = np.arange(real + pad) < real

        def loss(logits, rows, masked):
            outputs = methods.Outputs(
                logits, None if router_out is None else jnp.asarray(router_out[rows]),
                jnp.asarray(teacher[rows]) if method.needs_teacher else None,
                jnp.asarray(mask) if masked else None)
            return method.loss(outputs, jnp.asarray(labels[rows]), jnp.int32(epoch))

        full = slice(None)
        padded, grad = jax.value_and_grad(loss)(jnp.asarray(logits), full, True)
        alone, grad_alone = jax.value_and_grad(loss)(jnp.asarray(logits[:, :real]),
                                                     slice(0, real), False)
        np.testing.assert_allclose(padded, alone, rtol=2e-6, atol=1e-6, err_msg=label)
        np.testing.assert_allclose(grad[:, :real], grad_alone, rtol=1e-5, atol=1e-7,
                                   err_msg=label)
        assert not np.asarray(grad[:, real:]).any(), label
        # Without the mask the padding would count: the check above can fail.
        unmasked = loss(jnp.asarray(logits), full, False)
        assert abs(float(unmasked) - float(alone)) > 1e-4, label
        checked += 1
    assert checked >= 13
