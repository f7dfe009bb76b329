import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.data import ClientDataError
from fedsim.data import partition


def _assert_exact_partition(parts, num_examples):
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_examples))


@settings(max_examples=30, deadline=None)
@given(
    num_clients=st.integers(1, 12),
    extra=st.integers(0, 200),
    num_labels=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_every_partitioner_places_each_example_exactly_once(num_clients, extra, num_labels, seed):
    num_examples = 2 * num_clients + extra
    labels = np.random.default_rng(seed).integers(0, num_labels, num_examples)
    parts = {
        "iid": partition.iid(num_examples, num_clients, seed),
        "dirichlet": partition.dirichlet_label_skew(labels, num_clients, 0.3, seed),
        "shards": partition.pathological_shards(labels, num_clients, 2, seed),
        "quantity": partition.quantity_skew(num_examples, num_clients, 1.5, seed),
    }
    for name, result in parts.items():
        assert len(result) == num_clients, name
        _assert_exact_partition(result, num_examples)
    assert min(len(p) for p in parts["quantity"]) >= 1


def _balanced_labels(num_labels, per_label, seed):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_labels), per_label))


def test_shards_with_two_per_client_give_at_most_two_labels():
    labels = _balanced_labels(10, 60, seed=0)  # 600 examples -> 100 shards of 6, one label each
    parts = partition.pathological_shards(labels, num_clients=50, shards_per_client=2, seed=1)
    label_counts = [len(np.unique(labels[p])) for p in parts]
    assert max(label_counts) <= 2
    assert all(len(p) == 12 for p in parts)


def _mean_top_label_share(labels, parts):
    shares = [np.bincount(labels[p]).max() / len(p) for p in parts if len(p)]
    return float(np.mean(shares))


def test_dirichlet_concentration_controls_label_skew():
    labels = _balanced_labels(10, 500, seed=2)
    skewed = partition.dirichlet_label_skew(labels, num_clients=20, alpha=0.1, seed=3)
    uniform = partition.dirichlet_label_skew(labels, num_clients=20, alpha=1000.0, seed=3)
    assert _mean_top_label_share(labels, skewed) > 0.5
    assert _mean_top_label_share(labels, uniform) < 0.2
    uniform_sizes = [len(p) for p in uniform]
    assert min(uniform_sizes) > 150 and max(uniform_sizes) < 350  # 250 expected


def test_quantity_skew_gives_heavy_tailed_sizes_and_iid_even_ones():
    skewed = [
        len(p) for p in partition.quantity_skew(10_000, 100, exponent=1.0, seed=4, min_examples=5)
    ]
    assert min(skewed) >= 5 and max(skewed) > 5 * np.median(skewed)
    even = [len(p) for p in partition.iid(10_000, 100, seed=4)]
    assert set(even) == {100}


def test_to_client_data_from_arrays_and_from_a_dataset_agree():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.int64)
    parts = partition.iid(10, 3, seed=5)
    from_arrays = partition.to_client_data((x, y), parts)
    from_dataset = partition.to_client_data(tf.data.Dataset.from_tensor_slices((x, y)), parts)
    for client, part in zip(["0", "1", "2"], parts):
        for population in (from_arrays, from_dataset):
            ys = [
                int(e[1])
                for e in population.create_tf_dataset_for_client(client).as_numpy_iterator()
            ]
            assert ys == list(part)


def test_bad_arguments_are_named():
    with pytest.raises(ClientDataError, match="alpha"):
        partition.dirichlet_label_skew([0, 1], 1, alpha=0.0, seed=0)
    with pytest.raises(ClientDataError, match="3 examples into 4 parts"):
        partition.iid(3, 4, seed=0)
    with pytest.raises(ClientDataError, match="min_examples=5"):
        partition.quantity_skew(10, 3, 1.0, seed=0, min_examples=5)
