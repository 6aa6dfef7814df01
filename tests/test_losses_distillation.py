"""Knowledge distillation (`ltx.losses.distillation`) against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import np_log_softmax as _np_log_softmax, np_softmax as _np_softmax, np_kl_batchmean as _np_kl_batchmean
from ltx import losses


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def _np_distill(student, teacher, temp, t_squared):
    s, t = student.astype(np.float64), teacher.astype(np.float64)
    kl = _np_kl_batchmean(_np_log_softmax(t / temp), _np_log_softmax(s / temp))
    return kl * temp ** 2 if t_squared else kl


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, mult", [((1, 2), 1.0), ((9, 10), 5.0), ((64, 100), 30.0),
                                         ((8, 6), 1e3)])
@pytest.mark.parametrize("temp, t_squared", [(1.0, True), (1.5, True), (4.0, False)])
def test_distillation_matches_numpy(dtype, shape, mult, temp, t_squared):
    rng = np.random.default_rng(shape[0])
    student = (rng.normal(size=shape) * mult).astype(dtype)
    teacher = (rng.normal(size=shape) * mult).astype(dtype)
    with jax.enable_x64(dtype == np.float64):
        got = losses.distillation_loss(jnp.asarray(student), jnp.asarray(teacher),
                                       temperature=temp, t_squared=t_squared)
        assert got.dtype == (jnp.float64 if dtype == np.float64 else jnp.float32)
        same = losses.distillation_loss(student, student, temperature=temp)
    np.testing.assert_allclose(got, _np_distill(student, teacher, temp, t_squared),
                               **_tol(dtype))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def test_distillation_gradient_flows_to_the_student_only():
    rng = np.random.default_rng(8)
    student, teacher = rng.normal(size=(2, 6, 5)) * 3
    temp = 1.5
    with jax.enable_x64(True):
        g_s, g_t = jax.grad(lambda s, t: losses.distillation_loss(s, t, temperature=temp),
                            argnums=(0, 1))(jnp.asarray(student), jnp.asarray(teacher))
    # d/ds T^2 KL(q || softmax(s / T)) = T (p - q) / B.
    expected = temp * (_np_softmax(student / temp) - _np_softmax(teacher / temp)) / 6
    np.testing.assert_allclose(g_s, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(g_t, 0.0)


Z3 = np.zeros((3, 4, 5))


@pytest.mark.parametrize("call, match", [
    (lambda: losses.distillation_loss(np.zeros((4, 5)), np.zeros((4, 6)), temperature=1.0),
     r"student_logits \(4, 5\) and teacher_logits \(4, 6\) must have the same"),
    (lambda: losses.distillation_loss(Z3, Z3, temperature=1.0),
     r"student_logits must be \[B, C\]"),
    (lambda: losses.distillation_loss(np.zeros((4, 5)), np.zeros((4, 5)), temperature=0.0),
     "temperature must be a finite number > 0, got 0.0"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
