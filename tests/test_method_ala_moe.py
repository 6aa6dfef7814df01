"""ALA + MoE as a method (`ltx.methods.ala_moe`): ALA on experts and router, distillation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from helpers import random_outputs as _outputs
from ltx import methods
from ltx.methods.ala_moe import config as ala_config
from ltx.methods.ala_moe import loss as ala_losses

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def test_ala_moe_router_learns_only_after_the_router_epoch():
    cfg = ala_config.method_config(router_epoch=3, drw_epoch=100)
    method = methods.build(cfg, COUNTS)
    outputs, labels = _outputs(3, router=3)
    outputs = outputs._replace(logits=np.clip(outputs.logits, -29, 29))  # s * cos, |cos| < 1.
    experts = ala_losses.ala_loss(outputs.logits, labels, class_counts=COUNTS)
    weights = jax.nn.softmax(outputs.router, -1)
    combined = np.einsum("ebc,be->bc", outputs.logits, weights)
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(2)), experts, rtol=1e-5)
    np.testing.assert_allclose(method.loss(outputs, labels, jnp.int32(3)),
                               experts + ala_losses.ala_loss(combined, labels, class_counts=COUNTS),
                               rtol=1e-5)
    np.testing.assert_allclose(method.aggregate(outputs), combined, rtol=1e-5, atol=1e-4)

    def router_grad(epoch):
        return jax.grad(lambda r: method.loss(outputs._replace(router=r), labels,
                                              jnp.int32(epoch)))(jnp.asarray(outputs.router))
    assert float(jnp.abs(router_grad(2)).max()) == 0.0
    assert float(jnp.abs(router_grad(3)).max()) > 0.0

    distill = methods.build(ml_collections.ConfigDict(dict(cfg, stage="distill", num_experts=1)),
                            COUNTS)
    single, labels = _outputs(1, seed=3, teacher=True)
    single = single._replace(logits=np.clip(single.logits, -29, 29),
                             teacher_logits=np.clip(single.teacher_logits, -29, 29))
    np.testing.assert_allclose(distill.loss(single, labels, jnp.int32(0)),
                               ala_losses.ala_loss(single.logits[0], labels, class_counts=COUNTS),
                               rtol=1e-5)
