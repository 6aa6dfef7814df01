"""The models of the decoupled classifiers: a trained trunk, frozen, under a re-balanced
classifier.

Every model here is a `TrunkWrapper`: the trunk's variables keep their names, so the joint
run's checkpoint (`model.init_checkpoint`, a stage's `init_from`) loads into it, and each
returns logits [E, B, C] (one set per expert of a multi-expert trunk).

- `RetrainedHeadModel` (cRT): the trunk's own heads (`experts/head`, re-initialised by the
  method's `reinit`) on stop-gradient features; only they train.
- `ScaledLogitsModel` (LWS): the frozen trunk's logits times learnt class scales
  `lws_scales` [E, C], initialised to 1.
- `TauNormModel` (tau-normalised): the trunk's linear heads with w_c / ||w_c||^tau, no bias.
- `NCMModel` (nearest class mean): class means of the training features, in the variable
  collection 'ncm' ({'mean' [E, F], 'centroids' [E, C, F]}, zeros until
  `ltx.methods.decoupled.finish` computes them).
- `FeaturesModel`: the pooled features [E, B, F] in place of logits, for the predictors that
  compute statistics of a split.

BatchNorm: the official cRT and LWS put every network in train mode each epoch
(`run_networks.train`: `model.train()`) and freeze the feature model by `requires_grad=False`
only, so the frozen trunk normalises with batch statistics and its running statistics follow
the class-balanced batches. `RetrainedHeadModel` and `ScaledLogitsModel` do the same: the trunk
runs in the mode it is called with, its parameters get no gradient. tau-normalisation and NCM
use the trunk in inference mode, as the official feature extraction (`--test`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltx.methods.decoupled import classifiers
from ltx.models import heads
from ltx.models.multi_expert import EXPERTS_NAME
from ltx.models.wrappers import TrunkWrapper


def _unbound_head(trunk) -> nn.Module:
    """The trunk's head module, unbound, to apply with given parameters (the kernel init is
    irrelevant: it never initialises)."""
    kind = trunk.head
    if kind == "linear":
        return heads.LinearHead(trunk.num_classes, parent=None)
    if kind == "cosine":
        return heads.CosineHead(trunk.num_classes, scale=trunk.cosine_scale, parent=None)
    if kind == "lws":
        return heads.LWSHead(trunk.num_classes, parent=None)
    raise ValueError(f"unknown head kind {kind!r}; expected one of {heads.HEAD_KINDS}")


class RetrainedHeadModel(TrunkWrapper):
    """cRT: `__call__(x, *, train, mask=None)` -> logits [E, B, C] of the trunk's heads applied
    to `stop_gradient` of its pooled features.

    The heads are the trunk's own parameters (`experts/head/...`); the trunk's logits are
    recomputed from stop-gradient features so that no gradient (and no backward pass) reaches
    the trunk, whose parameters the method freezes anyway.
    """

    def setup(self):
        self.share_trunk_scope()

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        _, features = self.trunk(x, train=train, mask=mask, return_features=True)
        head_params = self.variables["params"][EXPERTS_NAME]["head"]
        head = _unbound_head(self.trunk)
        features = jax.lax.stop_gradient(features)
        return jax.vmap(lambda p, f: head.apply({"params": p}, f))(head_params, features)


class ScaledLogitsModel(TrunkWrapper):
    """LWS: `__call__(x, *, train, mask=None)` -> `lws_scales[:, None, :] * stop_gradient(
    trunk logits)`, [E, B, C]; `lws_scales` [E, C] starts at 1 (the official `scales`)."""

    def setup(self):
        self.share_trunk_scope()
        self.lws_scales = self.param("lws_scales", nn.initializers.ones,
                                     (self.trunk.num_experts, self.trunk.num_classes),
                                     jnp.float32)

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        logits = jax.lax.stop_gradient(self.trunk(x, train=train, mask=mask))
        return classifiers.lws_logits(logits, self.lws_scales)


class TauNormModel(TrunkWrapper):
    """tau-normalised classifier: `__call__(x, *, train, mask=None)` -> f . w_c / ||w_c||^tau
    [E, B, C] of the trunk's linear heads (bias dropped), trunk in inference mode.

    Attributes:
      tau: the exponent, >= 0.
    """

    tau: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.trunk.head != "linear":
            raise ValueError(
                f"tau-normalisation needs the trunk's linear classifier, but model.head="
                f"{self.trunk.head!r}: a cosine head normalises its weights already (every tau "
                "gives the same logits) and an 'lws' head scales them; train the trunk with "
                "model.head='linear'")
        if not (isinstance(self.tau, (int, float)) and not isinstance(self.tau, bool)
                and self.tau >= 0):
            raise ValueError(f"method.tau_norm={self.tau!r}; expected a number >= 0 (a tau to be "
                             "chosen on a split is set by the tau_norm finish step)")

    def setup(self):
        self.share_trunk_scope()

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        del train, mask  # Inference mode always: nothing here trains.
        _, features = self.trunk(x, train=False, return_features=True)
        kernel = self.variables["params"][EXPERTS_NAME]["head"]["dense"]["kernel"]
        return classifiers.tau_norm_logits(features, kernel, self.tau)


class NCMModel(TrunkWrapper):
    """Nearest class mean: `__call__(x, *, train, mask=None)` -> `classifiers.ncm_logits`
    [E, B, C] of the trunk's features (inference mode) against the 'ncm' variables.

    Attributes:
      feature_type: 'un' | 'l2n' | 'cl2n'.
      distance: 'l2' | 'cos'.
    """

    feature_type: str = "cl2n"
    distance: str = "l2"

    def __post_init__(self):
        super().__post_init__()
        if self.feature_type not in classifiers.FEATURE_TYPES:
            raise ValueError(f"method.ncm_features={self.feature_type!r}; expected one of "
                             f"{classifiers.FEATURE_TYPES}")
        if self.distance not in classifiers.DISTANCES:
            raise ValueError(f"method.ncm_distance={self.distance!r}; expected one of "
                             f"{classifiers.DISTANCES}")

    def setup(self):
        self.share_trunk_scope()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        del train, mask
        _, features = self.trunk(x, train=False, return_features=True)
        experts, _, dims = features.shape
        mean = self.variable("ncm", "mean", jnp.zeros, (experts, dims), jnp.float32)
        centroids = self.variable("ncm", "centroids", jnp.zeros,
                                  (experts, self.trunk.num_classes, dims), jnp.float32)
        return classifiers.ncm_logits(features, mean.value, centroids.value,
                                      feature_type=self.feature_type, distance=self.distance)


class FeaturesModel(TrunkWrapper):
    """`__call__(x, *, train, mask=None)` -> the trunk's pooled features [E, B, F], inference
    mode (what `ltx.predictor.Predictor.outputs` then returns as `logits`)."""

    def setup(self):
        self.share_trunk_scope()

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None):
        del train, mask
        return self.trunk(x, train=False, return_features=True)[1]
