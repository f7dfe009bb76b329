"""Population statistics against values worked out by hand."""
import numpy as np
import pytest

from fedsim.data.statistics import PopulationStatistics, StatisticsError, describe, label_counts, label_entropy_bits

# Four clients over 3 classes, worked out by hand:
#   A = [0, 0, 1, 1]  two labels in equal shares:   2 distinct, entropy 1 bit
#   B = [2, 2, 2]     one label:                    1 distinct, entropy 0 bits
#   C = [0, 1, 2, 2]  shares 1/4, 1/4, 1/2:         3 distinct, entropy 2*(1/4*2) + 1/2*1 = 1.5 bits
#   D = []            empty: no distribution, 0 distinct
CLIENTS = [np.array([0, 0, 1, 1]), np.array([2, 2, 2]), np.array([0, 1, 2, 2]), np.array([], dtype=np.int64)]


def test_label_counts_per_client():
    np.testing.assert_array_equal(label_counts(CLIENTS, 3), [[2, 2, 0], [0, 0, 3], [1, 1, 2], [0, 0, 0]])
    assert label_counts(CLIENTS).shape == (4, 3)  # classes inferred: largest label + 1
    assert label_counts(CLIENTS, 5).shape == (4, 5)  # classes no client holds still get a column


def test_entropy_in_bits():
    entropy = label_entropy_bits(label_counts(CLIENTS, 3))
    np.testing.assert_allclose(entropy[:3], [1.0, 0.0, 1.5])
    assert np.isnan(entropy[3])
    assert label_entropy_bits(np.ones((1, 10)))[0] == pytest.approx(np.log2(10))  # uniform over 10: 3.32 bits


def test_describe_by_hand():
    assert describe(CLIENTS, num_classes=3) == PopulationStatistics(
        num_clients=4,
        empty_clients=1,
        examples_min=0,
        examples_median=3.5,  # sizes 4, 3, 4, 0 -> sorted 0, 3, 4, 4
        examples_mean=2.75,  # 11 / 4
        examples_max=4,
        mean_distinct_labels=1.5,  # (2 + 1 + 3 + 0) / 4
        mean_label_entropy_bits=pytest.approx(2.5 / 3),  # (1 + 0 + 1.5) / 3 non-empty clients
    )


def test_examples_may_carry_several_labels():
    # Two clients of next-character sequences: 2 examples of 3 labels, 1 example of 3 labels.
    stats = describe([np.array([[1, 2, 3], [1, 1, 1]]), np.array([[4, 4, 4]])], num_examples=[2, 1])
    assert (stats.examples_min, stats.examples_max, stats.examples_mean) == (1, 2, 1.5)
    assert stats.mean_distinct_labels == 2.0  # {1, 2, 3} and {4}


@pytest.mark.parametrize("clients, num_classes, match", [
    ([np.array([0, 3])], 3, r"label 3 is outside \[0, 3\)"),
    ([np.array([0, -1])], None, "client 0: label -1 is negative"),
    ([np.array([0.5])], None, "labels must be integers"),
    ([], None, "no clients to describe"),
])
def test_bad_labels_are_named(clients, num_classes, match):
    with pytest.raises(StatisticsError, match=match):
        describe(clients, num_classes=num_classes)


def test_example_counts_must_match_clients():
    with pytest.raises(StatisticsError, match="1 example counts for 4 clients"):
        describe(CLIENTS, num_examples=[3])
