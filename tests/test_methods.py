"""The method registry (`ltx.methods`): building a method from its config, with its checks."""

import ml_collections
import numpy as np
import pytest

from ltx import methods

COUNTS = np.array([134, 103, 80, 62, 48, 37, 28, 22, 17, 13])


def test_declared_expert_count_must_match_the_method():
    with pytest.raises(ValueError, match="num_experts=2 but method 'sade' builds 3"):
        methods.build(ml_collections.ConfigDict(dict(name="sade", num_experts=2, tau=2.0)),
                      COUNTS)
    with pytest.raises(ValueError, match="method.name='lfme'"):
        methods.build(ml_collections.ConfigDict(dict(name="lfme")), COUNTS)
