"""Dirichlet partitioning with a minimum client size: resampled as the papers and Flower Datasets do."""
import numpy as np
import pytest

from fedsim.data import ClientDataError
from fedsim.data import partition
from fedsim.data.partition import PartitionSizeError

# 10 labels x 1,000 examples cut into 100 clients at alpha 0.1: the setting of
# issue 17, where the first draw from seed 0 leaves 2 clients empty.
LABELS = np.repeat(np.arange(10), 1000)
CLIENTS, ALPHA = 100, 0.1


def _first_draw_as_before(labels, num_clients, alpha, seed):
    """The partitioner as it was before ``min_size`` existed (commit 3f94694), copied as the reference."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        exact = shares / shares.sum() * len(members)
        sizes = np.floor(exact).astype(np.int64)
        order = np.argsort(sizes - exact, kind="stable")
        sizes[order[: len(members) - sizes.sum()]] += 1
        for client, chunk in enumerate(np.split(members, np.cumsum(sizes)[:-1])):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]


def _sum_of_squared_shares(labels, parts):
    """Per label, sum over clients of (the client's share of that label)^2."""
    counts = np.array([np.bincount(labels[part], minlength=10) for part in parts])  # [clients, labels]
    shares = counts / counts.sum(axis=0)
    return (shares**2).sum(axis=0)


def test_min_size_zero_is_the_old_partition_bit_for_bit():
    for seed in (0, 7):
        new = partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed)
        old = _first_draw_as_before(LABELS, CLIENTS, ALPHA, seed)
        assert all(np.array_equal(a, b) for a, b in zip(new, old))


def test_min_size_one_leaves_no_client_empty():
    first = partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed=0)
    assert sum(len(p) == 0 for p in first) == 2  # the problem, as reported
    parts = partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed=0, min_size=1)
    assert min(len(p) for p in parts) >= 1
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


def test_resampling_is_a_function_of_the_seed():
    a = partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed=0, min_size=1)
    b = partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed=0, min_size=1)
    c = partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed=1, min_size=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_resampled_label_shares_still_follow_the_dirichlet():
    # For shares p ~ Dirichlet(alpha, ..., alpha) over K clients,
    # E[sum_i p_i^2] = K * (Var p_i + E[p_i]^2) with p_i ~ Beta(alpha, (K-1) alpha):
    # = (alpha + 1) / (K alpha + 1) = 1.1 / 11 = 0.1 here; IID shares give 1/K = 0.01,
    # alpha = 1 gives 2/101 = 0.0198. One label's sum has standard deviation about
    # 0.035 (simulated with numpy's Dirichlet), so the mean of 50 labels has about
    # 0.005: 0.02 is four of those. Requiring one example per client conditions on
    # an event of probability near 1 here, which moves the mean far less than that.
    sums = np.concatenate([
        _sum_of_squared_shares(LABELS, partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed, min_size=1))
        for seed in range(5)
    ])
    assert sums.mean() == pytest.approx(0.1, abs=0.02)


def test_impossible_min_size_is_refused_at_once():
    with pytest.raises(PartitionSizeError, match=r"min_size=101 for 100 clients needs 10100 examples, only 10000"):
        partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed=0, min_size=101)


def test_unmet_min_size_names_alpha_and_min_size_after_bounded_attempts():
    # 1,000 examples over 100 clients at alpha 0.1: a draw with no empty client is too rare to find.
    labels = np.repeat(np.arange(10), 100)
    with pytest.raises(PartitionSizeError, match=r"Dirichlet\(alpha=0.1\) over 100 clients: none of 5 draws .*"
                                                  r"min_size=1 .*raise alpha"):
        partition.dirichlet_label_skew(labels, CLIENTS, ALPHA, seed=0, min_size=1, max_attempts=5)
    assert issubclass(PartitionSizeError, ClientDataError)  # so the CLI prints it without a traceback


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_min_size_must_be_a_non_negative_int(bad):
    with pytest.raises(ClientDataError, match="min_size must be an int >= 0"):
        partition.dirichlet_label_skew(LABELS, CLIENTS, ALPHA, seed=0, min_size=bad)
