"""Knowledge distillation between a student's and a teacher's logits.

Used by RIDE's self-distillation (T = 1.5, `ltx.methods.ride`) and by ALA + MoE's distillation of
the mixture into one model (T = 2, `ltx.methods.ala_moe`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ltx.losses import input_checks as checks


def kl_to_target(log_target, log_probs, where=None):
    """(1/B) sum_{i,c} q_ic (log q_ic - log p_ic) for log q [B, C], log p [..., B, C] -> [...].

    PyTorch's `F.kl_div(log_p, q, reduction='batchmean')`; a zero q contributes 0. With `where`
    [B], B counts (and the sum runs over) only its True rows."""
    target = jnp.exp(log_target)
    return checks.batch_mean(jnp.sum(target * (log_target - log_probs), axis=-1), where)


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float,
                      t_squared: bool = True, where=None) -> jax.Array:
    """Knowledge distillation, KL(teacher || student) at temperature T, batch mean.

      L = T^2 * (1/B) sum_i sum_c q_ic (log q_ic - log p_ic),
      q = softmax(sg(teacher) / T),  p = softmax(student / T)

    (T^2 only with `t_squared`.) The teacher is a target: its logits pass through stop_gradient,
    as the official teacher runs under `torch.no_grad`. `model/loss.py: RIDELossWithDistill` uses
    the student's and the 6-expert teacher's *mean* logits and T = 1.5 in the distill configs.

    Official multiplicity (not reproduced here, compose it in the method): RIDELossWithDistill
    loops over the E experts and adds, per iteration, the full RIDE loss (itself summed over
    experts) and this KD term, so its total is E * (ride_loss + distillation_loss), 3x for three
    experts.

    Args:
      student_logits: float [B, C].
      teacher_logits: float [B, C].
      temperature: T > 0.
      t_squared: multiply by T^2 (Hinton et al.), as the official code does.
      where: optional bool [B]; only these rows count (a padded last batch).

    Returns:
      Scalar loss, float32 or wider.
    """
    fn = "distillation_loss"
    student_logits = checks.check_logits(student_logits, fn, (2,), "[B, C]", "student_logits")
    teacher_logits = checks.check_logits(teacher_logits, fn, (2,), "[B, C]", "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"{fn}: student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same [B, C] shape")
    checks.check_positive(temperature, "temperature", fn)
    where = checks.check_where(where, fn, student_logits.shape[0])
    dtype = checks.compute_dtype(student_logits, teacher_logits)
    log_target = jax.nn.log_softmax(
        jax.lax.stop_gradient(teacher_logits.astype(dtype)) / temperature, axis=-1)
    log_probs = jax.nn.log_softmax(student_logits.astype(dtype) / temperature, axis=-1)
    loss = kl_to_target(log_target, log_probs, where)
    return loss * temperature ** 2 if t_squared else loss
