"""Long-tailed counts and the reference's per-class selection order (docs/shared.md)."""

import numpy as np
import pytest

from ltx.data import long_tail_counts, long_tail_indices


def test_cifar100_ir100_counts_match_the_reference():
    counts = long_tail_counts(500, 100, 100)
    assert counts.sum() == 10_847
    np.testing.assert_array_equal(counts[:5], [500, 477, 455, 434, 415])
    np.testing.assert_array_equal(counts[-5:], [6, 5, 5, 5, 5])
    assert counts[69] == 20  # The class that separates the RIDE and ACE few-shot conventions.


@pytest.mark.parametrize("ratio, total", [(50, 12_608), (10, 19_573)])
def test_cifar100_other_ratios(ratio, total):
    assert long_tail_counts(500, 100, ratio).sum() == total


def test_cifar10_ir100_counts():
    np.testing.assert_array_equal(long_tail_counts(5000, 10, 100),
                                  [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def test_truncation_not_rounding():
    # 500 * 0.01 ** (1 / 99) = 477.47...; rounding would give 477 too, but class 2 is 455.83...
    counts = long_tail_counts(500, 100, 100)
    exact = 500 * 0.01 ** (np.arange(100) / 99)
    np.testing.assert_array_equal(counts, np.floor(exact + 1e-9).astype(int))
    assert counts[2] == 455


def test_step_and_reverse_profiles():
    step = long_tail_counts(500, 100, 10, profile="step")
    assert (step[:50] == 500).all() and (step[50:] == 50).all()
    forward = long_tail_counts(100, 100, 50)
    backward = long_tail_counts(100, 100, 50, reverse=True)
    np.testing.assert_array_equal(backward, forward[::-1])
    assert backward[-1] == 100 and backward[0] == 2
    np.testing.assert_array_equal(long_tail_counts(7, 4, 3, profile="balanced"), [7, 7, 7, 7])


def _legacy_reference(labels, counts, seed):
    # The reference code verbatim in spirit: global legacy seed, classes in np.unique order.
    np.random.seed(seed)
    out = []
    for cls, n in zip(np.unique(labels), counts):
        idx = np.where(labels == cls)[0]
        np.random.shuffle(idx)
        out.extend(idx[:n].tolist())
    return np.asarray(out)


def test_indices_follow_the_legacy_global_rng_order():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(100), 500)
    rng.shuffle(labels)  # CIFAR's train split is not sorted by label.
    counts = long_tail_counts(500, 100, 100)
    state = np.random.get_state()
    try:
        expected = _legacy_reference(labels, counts, 0)
    finally:
        np.random.set_state(state)
    got = long_tail_indices(labels, counts, seed=0)
    np.testing.assert_array_equal(got, expected)
    assert got.size == 10_847 and np.unique(got).size == got.size
    np.testing.assert_array_equal(np.bincount(labels[got], minlength=100), counts)


def test_indices_are_deterministic_and_seed_dependent():
    labels = np.repeat(np.arange(10), 50)
    counts = long_tail_counts(50, 10, 10)
    a, b = long_tail_indices(labels, counts), long_tail_indices(labels, counts)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, long_tail_indices(labels, counts, seed=1))


def test_indices_do_not_touch_global_numpy_state():
    np.random.seed(123)
    before = np.random.rand()
    np.random.seed(123)
    long_tail_indices(np.repeat(np.arange(3), 4), np.array([4, 2, 1]))
    assert np.random.rand() == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_per_class=500, num_classes=100, imbalance_ratio=0.5), "imbalance_ratio=0.5"),
    (dict(max_per_class=500, num_classes=100, imbalance_ratio=10, profile="cubic"), "cubic"),
    (dict(max_per_class=0, num_classes=100, imbalance_ratio=10), "max_per_class=0"),
])
def test_bad_count_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        long_tail_counts(**kwargs)


def test_bad_labels_and_counts_name_the_problem():
    with pytest.raises(ValueError, match="label 7 out of range"):
        long_tail_indices(np.array([0, 1, 7]), np.array([1, 1]))
    with pytest.raises(ValueError, match="class 1 needs 3 images but the dataset has only 1"):
        long_tail_indices(np.array([0, 0, 0, 1]), np.array([1, 3]))
