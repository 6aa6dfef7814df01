"""The interface between a method and the rest of ltx: `Method`, and the shared prior correction.

A method is built from `config.method` and the training class counts (`ltx.methods.build`) and
hands the trainer, the stages, evaluation, prediction and the stats tool a `Method`: pure
functions of the model's `Outputs`, the wrapper it puts around the shared trunk and its
optimizer rules (its own report parts are evaluators its home registers, `ltx.evaluators`).
Nothing outside a method's home knows which method it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ltx import fusion
from ltx.losses import logit_adjustment
from ltx.outputs import Outputs, model_outputs  # noqa: F401 (the interface's types)


def mean_aggregate(outputs: Outputs, params=None) -> jax.Array:
    """Outputs with logits [E, B, C] -> [B, C]: the mean of the expert logits (a product of
    experts; one expert: its logits)."""
    del params
    return fusion.logit_mean(outputs.logits)


def prior_correction(logits: jax.Array, target_prior, *, train_prior=None,
                     mean_lambda: float = 0.0) -> jax.Array:
    """Logits for a known test class prior q: `logits + log q - mean_lambda * log pi`.

    A model whose logits estimate log p(x|y) + lambda log pi (pi the training prior; lambda 0 for
    a balanced model such as BalPoE's ensemble, 1 for plain cross-entropy) predicts under the
    prior q after adding log q - lambda log pi. For balanced models this is `logits + log q`,
    BalPoE's `--posthoc_bias_correction`.

    Args:
      logits: [..., C] aggregated logits.
      target_prior: [C], summing to 1.
      train_prior: [C] training class prior; needed when mean_lambda != 0.
      mean_lambda: the lambda of the logits (for BalPoE the mean of the experts' lambdas).
    """
    prior = jnp.asarray(target_prior, logits.dtype)
    out = logits + jnp.log(prior + logit_adjustment.PRIOR_EPS)
    if mean_lambda:
        if train_prior is None:
            raise ValueError(f"prior_correction with mean_lambda={mean_lambda} needs train_prior")
        train = jnp.asarray(train_prior, logits.dtype)
        out = out - mean_lambda * jnp.log(train + logit_adjustment.PRIOR_EPS)
    return out


def balanced_prior_correction(logits: jax.Array, target_prior) -> jax.Array:
    """`prior_correction` of a model treated as balanced (lambda 0): `logits + log q`."""
    return prior_correction(logits, target_prior)


def lambda_prior_correction(class_counts, mean_lambda: float):
    """`(logits, target_prior) -> logits` for a model with this lambda (see `prior_correction`)."""
    counts = np.asarray(class_counts, np.float64)
    train_prior = counts / counts.sum()
    return lambda logits, prior: prior_correction(logits, prior, train_prior=train_prior,
                                                  mean_lambda=mean_lambda)


@dataclasses.dataclass(frozen=True)
class Method:
    """What the trainer, the stages, evaluation and prediction see of a method.

    Attributes:
      name: registry name.
      num_experts: E, the leading axis of the model's logits.
      loss: `(outputs: Outputs, labels [B], epoch int32 []) -> scalar`; epoch is the 0-indexed
        epoch, traced inside the jitted step, for schedules such as DRW. When `outputs.mask` is
        set (an epoch's padded last batch) only its True rows may count, as if the batch were
        that smaller one (every loss in `ltx.losses` takes it as `where=`).
      aggregate: `(outputs: Outputs, params=None) -> logits [B, C]`, the ensemble prediction.
        `params` are the trained parameters (ACE rescales its experts by their classifier norms);
        the train step passes None, which must still give a prediction for the accuracy log.
      correct_prior: `(logits [B, C], target_prior [C]) -> logits [B, C]`, the aggregated
        logits for a known test class prior; None when the method has none (evaluation then
        reports the plain prediction only).
      wrap_model: `(trunk: ltx.models.MultiExpertNet) -> nn.Module`, the model this method
        trains: the trunk itself (None), the trunk with other attributes (`trunk.clone(...)`,
        e.g. ACE's head and stop-gradient experts), or a module around it (RIDE's router on a
        frozen trunk) that keeps the trunk's variable names and returns logits [E, B, C] or
        {'logits', 'router'}.
      model_additions: JSON-able description of what `wrap_model` adds; part of the checkpoint
        fingerprint, so resuming into a model without them fails clearly.
      trainable: regex over parameter paths ('experts/head/kernel'); only matching parameters are
        updated (RIDE's router stage). None: all.
      expert_lr_scales: [E] multipliers of the learning rate of each expert's branch parameters
        (ACE's distribution-adaptive optimizer). None: all 1.
      needs_teacher: the loss reads `outputs.teacher_logits`.
      expert_lambdas: [E] the experts' logit-adjustment lambdas when they are gLA experts
        (BalPoE, CE, LA): evaluation then estimates each expert's learned prior. None: unknown.
      update_constraint: `(steps_per_epoch: float) -> optax.GradientTransformation`, chained
        last onto the optimizer of the trainable parameters (after weight decay, SGD and the
        learning-rate rules; it sees the parameters): a constraint the method keeps the
        parameters in, e.g. weight balancing's MaxNorm projection. None: no constraint.
      reinit: regex over parameter paths; the parameters it matches keep their fresh
        initialisation when `model.init_checkpoint` initialises the model (cRT's re-trained
        classifier, which the checkpoint also holds). None: all that the checkpoint has loads.
    """

    name: str
    num_experts: int
    loss: Callable[..., jax.Array]
    aggregate: Callable[..., jax.Array] = mean_aggregate
    correct_prior: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    wrap_model: Callable[[Any], Any] | None = None
    model_additions: dict[str, Any] = dataclasses.field(default_factory=dict)
    trainable: str | None = None
    expert_lr_scales: tuple[float, ...] | None = None
    needs_teacher: bool = False
    expert_lambdas: tuple[float, ...] | None = None
    update_constraint: Callable[[float], Any] | None = None
    reinit: str | None = None

    def model(self, trunk):
        """The model this method trains, built on `trunk` (see `wrap_model`)."""
        return trunk if self.wrap_model is None else self.wrap_model(trunk)
