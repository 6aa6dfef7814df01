"""The models' initialisers (`ltx.models.initializers`): each draw is compiled once per shape in a
program, with the values of the inlined draw."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import tiny_config
from ltx import parts as parts_lib, steps
from ltx.models import heads, initializers, resnet_cifar

DRAWS = [(initializers.kaiming_normal, (3, 3, 16, 16)),
         (initializers.kaiming_normal_fan_out, (1, 1, 8, 32)),
         (initializers.torch_linear_default_init(64), (64, 10)),
         (initializers.normed_linear_init, (64, 10))]


@pytest.mark.parametrize("init, shape", DRAWS)
def test_an_outlined_draw_equals_the_inlined_one_and_compiles_once_per_shape(init, shape):
    def draws(key, outlined):
        keys = jax.random.split(key, 6)
        fn = init if outlined else init.__wrapped__
        return [fn(k, shape if i % 2 else shape[::-1], jnp.float32)
                for i, k in enumerate(keys)]

    key = jax.random.key(3)
    outlined = jax.jit(lambda k: draws(k, True))(key)
    inlined = jax.jit(lambda k: draws(k, False))(key)
    for a, b in zip(outlined, inlined):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    text = jax.jit(lambda k: draws(k, True)).lower(key).as_text()
    # Six draws of two shapes: two functions, six calls that XLA inlines late.
    assert text.count("func.func private @") - text.count("func.func private @_") == 2, text
    assert text.count('inlineable = "xla_late"') == 6


def _init(config):
    """(the initial parameters of `config`, the number of late-inlined calls in its init)."""
    parts = parts_lib.build(config)
    init = steps.make_init(parts.model, optax.sgd(0.1), parts.dataset.image_shape,
                           steps.make_mesh())
    key = parts_lib.init_key(config)
    return init(key).params, init.lower(key).as_text().count('inlineable = "xla_late"')


@pytest.mark.parametrize("name", ["digits_lt_balpoe", "digits_lt_ace"])  # Cosine, LWS heads.
def test_a_model_draws_the_values_of_the_inlined_initialisers(monkeypatch, name):
    config = tiny_config(name)
    outlined, calls = _init(config)
    inlined_linear = initializers.torch_linear_default_init.__wrapped__
    for module in (resnet_cifar, heads):
        monkeypatch.setattr(module, "kaiming_normal", initializers.kaiming_normal.__wrapped__)
    monkeypatch.setattr(heads, "torch_linear_default_init",
                        lambda fan_in: inlined_linear(fan_in).__wrapped__)
    monkeypatch.setattr(heads, "normed_linear_init", initializers.normed_linear_init.__wrapped__)
    inlined, inlined_calls = _init(config)
    leaves = jax.tree.leaves(outlined)
    assert inlined_calls == 0 and calls >= len([x for x in leaves if x.ndim > 1]) > 5
    for a, b in zip(leaves, jax.tree.leaves(inlined)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
