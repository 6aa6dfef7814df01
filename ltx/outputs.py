"""`Outputs`: what a model returns for a batch, as losses, fusions and evaluators see it."""

from __future__ import annotations

from typing import NamedTuple

import jax


class Outputs(NamedTuple):
    """The model's outputs on one batch (device arrays in the step, host arrays in evaluation).

    Attributes:
      logits: float32 [E, B, C] expert logits.
      router: float32 [B, K] router outputs of a routed model (RIDE's K = E - 1 cascade logits,
        ALA-MoE's K = E mixture logits), else None.
      teacher_logits: float32 [B, C] a distillation teacher's prediction, else None.
      mask: bool [B], the rows that are real examples when the batch is padded to its fixed
        shape (the smaller last batch of an epoch); losses count only these. None: all.
    """

    logits: jax.Array
    router: jax.Array | None = None
    teacher_logits: jax.Array | None = None
    mask: jax.Array | None = None


def model_outputs(outputs, teacher_logits=None, mask=None) -> Outputs:
    """`Outputs` of a model's return value: logits [E, B, C] or {'logits': ..., 'router': ...}."""
    if isinstance(outputs, dict):
        return Outputs(outputs["logits"], outputs.get("router"), teacher_logits, mask)
    return Outputs(outputs, None, teacher_logits, mask)


def select(outputs: Outputs, index) -> Outputs:
    """The samples `index` (an index array or boolean mask over N) of predicted outputs."""
    return Outputs(outputs.logits[:, index],
                   None if outputs.router is None else outputs.router[index],
                   None if outputs.teacher_logits is None else outputs.teacher_logits[index],
                   None if outputs.mask is None else outputs.mask[index])
