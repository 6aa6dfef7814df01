"""LDAM-DRW and focal as methods (`ltx.methods.ldam_drw`): the losses and the DRW switch."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from helpers import tiny_config

from ltx import losses, methods, trainer
from ltx.methods import ldam_drw
from ltx.methods.sade import loss as sade_losses

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def _inputs(experts, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-30, 30, size=(experts, 16, 10)).astype(np.float32)
    return methods.Outputs(logits), rng.integers(0, 10, 16)


def test_ldam_drw_switches_to_class_balanced_weights_at_the_drw_epoch():
    method = methods.build(ldam_drw.method_config("ldam_drw", drw_epoch=5), COUNTS)
    outputs, labels = _inputs(1)
    plain = losses.ldam_loss(outputs.logits[0], labels, class_counts=COUNTS)
    weighted = losses.ldam_loss(outputs.logits[0], labels, class_counts=COUNTS,
                                class_weights=losses.drw_class_weights(COUNTS))
    loss = jax.jit(method.loss)
    np.testing.assert_allclose(loss(outputs, labels, jnp.int32(4)), plain, rtol=1e-5)
    np.testing.assert_allclose(loss(outputs, labels, jnp.int32(5)), weighted, rtol=1e-5)
    assert abs(float(plain) - float(weighted)) > 1e-3


def test_focal_and_sade_use_their_losses():
    focal = methods.build(ldam_drw.method_config("focal", drw_epoch=100, gamma=2.0), COUNTS)
    outputs, labels = _inputs(1, seed=1)
    np.testing.assert_allclose(focal.loss(outputs, labels, jnp.int32(0)),
                               losses.focal_loss(outputs.logits[0], labels, gamma=2.0), rtol=1e-5)
    sade = methods.build(ml_collections.ConfigDict(dict(name="sade", num_experts=3, tau=2.0)),
                         COUNTS)
    outputs, labels = _inputs(3, seed=2)
    np.testing.assert_allclose(
        sade.loss(outputs, labels, jnp.int32(0)),
        sade_losses.sade_loss(outputs.logits, labels, class_counts=COUNTS, tau=2.0), rtol=1e-5)
    np.testing.assert_allclose(sade.aggregate(outputs), outputs.logits.mean(0), rtol=1e-6)


def test_ldam_drw_digits_config_trains_through_the_drw_switch(tmp_path):
    config = tiny_config("digits_lt_ldam_drw", epochs=3)
    assert config.method.drw_epoch == 2
    final, _ = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert final["method"] == "ldam_drw" and np.isfinite(final["nll"])
