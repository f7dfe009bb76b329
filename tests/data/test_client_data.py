import collections

import numpy as np
import pytest
import tensorflow as tf

from fedsim.data import ClientData, ClientDataError
from fedsim.data.generated import seeded_population


def _population():
    # Client c{i} has i examples; x rows are [k, k, k] for a population-unique k.
    return ClientData.from_tensor_slices(
        {
            f"c{i}": {
                "x": np.repeat(np.arange(10 * i, 10 * i + i, dtype=np.float32)[:, None], 3, axis=1),
                "y": np.arange(i, dtype=np.int64),
            }
            for i in range(1, 6)
        }
    )


def _xs(dataset):
    return sorted(float(element["x"][0]) for element in dataset.as_numpy_iterator())


def test_from_tensor_slices_exposes_ids_sizes_and_structure():
    population = _population()
    assert list(population.client_ids) == ["c1", "c2", "c3", "c4", "c5"]
    assert len(population) == 5
    assert [population.num_examples(c) for c in population.client_ids] == [1, 2, 3, 4, 5]
    assert population.element_type_structure == {
        "x": tf.TensorSpec([3], tf.float32),
        "y": tf.TensorSpec([], tf.int64),
    }
    assert _xs(population.create_tf_dataset_for_client("c3")) == [30.0, 31.0, 32.0]
    assert [len(list(dataset)) for dataset in population] == [1, 2, 3, 4, 5]


def test_unknown_client_id_error_names_the_id():
    with pytest.raises(ClientDataError, match="'nobody'"):
        _population().create_tf_dataset_for_client("nobody")


def test_clients_with_different_dtypes_are_rejected_naming_the_client():
    with pytest.raises(ClientDataError, match="'b'"):
        ClientData.from_tensor_slices(
            {"a": np.zeros([2], np.float32), "b": np.zeros([2], np.int32)}
        )


def test_arrays_of_different_lengths_within_a_client_are_rejected():
    with pytest.raises(ClientDataError, match="'a'"):
        ClientData.from_tensor_slices({"a": (np.zeros([2]), np.zeros([3]))})


def test_preprocess_is_lazy_and_traced_once_across_clients():
    calls = collections.Counter()

    def double(element):
        calls["map"] += 1
        return {**element, "x": element["x"] * 2}

    def pipeline(dataset):
        calls["pipeline"] += 1
        return dataset.map(double).batch(2)

    population = _population().preprocess(pipeline)
    assert calls["pipeline"] == 0
    batches = {c: list(population.create_tf_dataset_for_client(c)) for c in population.client_ids}
    assert calls == {"pipeline": 1, "map": 1}
    assert [len(batches[c]) for c in population.client_ids] == [1, 1, 2, 2, 3]
    np.testing.assert_array_equal(batches["c2"][0]["x"][:, 0], [40.0, 42.0])
    assert population.num_examples("c5") == 3  # elements after batching


def test_dataset_from_all_clients_holds_every_example_once():
    population = _population()
    expected = sorted(10.0 * i + k for i in range(1, 6) for k in range(i))
    assert _xs(population.create_tf_dataset_from_all_clients()) == expected
    shuffled = [
        float(e["x"][0])
        for e in population.create_tf_dataset_from_all_clients(seed=3).as_numpy_iterator()
    ]
    assert sorted(shuffled) == expected


def test_split_by_clients_is_disjoint_and_covers_the_population():
    train, test = _population().split_by_clients(0.4, seed=0)
    assert len(test) == 2 and len(train) == 3
    assert set(train.client_ids) | set(test.client_ids) == {"c1", "c2", "c3", "c4", "c5"}
    assert not set(train.client_ids) & set(test.client_ids)
    test_id = test.client_ids[0]
    with pytest.raises(ClientDataError):
        train.create_tf_dataset_for_client(test_id)
    again_train, _ = _population().split_by_clients(0.4, seed=0)
    assert list(again_train.client_ids) == list(train.client_ids)


def test_split_within_clients_partitions_each_clients_examples():
    population = _population()
    train, test = population.train_test_split_within_clients(0.4, seed=1)
    for client_id in population.client_ids:
        n = population.num_examples(client_id)
        train_xs = _xs(train.create_tf_dataset_for_client(client_id))
        test_xs = _xs(test.create_tf_dataset_for_client(client_id))
        assert sorted(train_xs + test_xs) == _xs(population.create_tf_dataset_for_client(client_id))
        assert len(test_xs) == round(0.4 * n) == test.num_examples(client_id)
        assert len(train_xs) == train.num_examples(client_id)
    _, test_again = population.train_test_split_within_clients(0.4, seed=1)
    assert _xs(test_again.create_tf_dataset_for_client("c5")) == _xs(
        test.create_tf_dataset_for_client("c5")
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_split_fractions_outside_zero_one_are_rejected(fraction):
    with pytest.raises(ClientDataError, match="test_fraction"):
        _population().split_by_clients(fraction, seed=0)


def test_sample_client_ids_draws_distinct_members():
    population = _population()
    cohort = population.sample_client_ids(3, seed=5)
    assert len(set(cohort)) == 3 and set(cohort) <= set(population.client_ids)
    with pytest.raises(ClientDataError, match="cannot sample 6"):
        population.sample_client_ids(6, seed=5)


def test_seeded_population_of_a_million_clients_builds_any_client_reproducibly():
    def make_examples(rng, position):
        return {"x": rng.normal(size=(3, 2)).astype(np.float32), "y": np.full(3, position)}

    population = seeded_population(1_000_000, make_examples, seed=7)
    assert len(population) == 1_000_000
    assert population.client_ids[999_999] == "client_999999"
    first = list(population.create_tf_dataset_for_client("client_123456").as_numpy_iterator())
    second = list(population.create_tf_dataset_for_client("client_123456").as_numpy_iterator())
    np.testing.assert_array_equal(first[1]["x"], second[1]["x"])
    assert first[0]["y"] == 123456
    with pytest.raises(ClientDataError):
        population.create_tf_dataset_for_client("client_1000000")


def _generated_examples(rng, position):
    return rng.normal(size=(position + 1, 2)).astype(np.float32), np.arange(position + 1, dtype=np.int32)


def test_a_seeded_population_carries_its_source_and_gives_the_generator_s_examples():
    population = seeded_population(5, _generated_examples, seed=3, prefix="g")
    rebuilt = population.client_source.client_data()  # what a Ray actor builds from the source
    x, y = _generated_examples(np.random.default_rng([3, 4]), 4)  # client g4, drawn independently
    for data in (population, rebuilt):
        rows = list(data.create_tf_dataset_for_client("g4").as_numpy_iterator())
        np.testing.assert_array_equal(np.stack([r[0] for r in rows]), x)
        np.testing.assert_array_equal([r[1] for r in rows], y)
    assert list(rebuilt.client_ids) == ["g0", "g1", "g2", "g3", "g4"]
