import contextlib
import sqlite3

import numpy as np
import pytest
import tensorflow as tf

from fedsim.data import ClientData, ClientDataError, read_sql_client_data, write_sql_client_data
from fedsim.data.array_dataset import ArrayDataset
from fedsim.data.sql import create_schema

FEATURES = {
    "name": tf.TensorSpec([], tf.string),
    "x": tf.TensorSpec([2, 2], tf.float32),
    "y": tf.TensorSpec([], tf.int32),
}


def _slices(client_index, num_examples):
    rng = np.random.default_rng(client_index)
    return {
        "name": np.array([f"row {client_index}-{k}" for k in range(num_examples)]),
        "x": rng.normal(size=(num_examples, 2, 2)).astype(np.float32),
        "y": rng.integers(0, 100, size=num_examples).astype(np.int32),
    }


# An id with a quote checks that ids are escaped in the SQL query.
CLIENTS = {"bob": _slices(0, 3), "alice": _slices(1, 1), "o'brien": _slices(2, 4)}


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "population.sqlite"
    train = ClientData.from_tensor_slices(CLIENTS)
    test = ClientData.from_tensor_slices({"bob": _slices(9, 2)})
    write_sql_client_data(path, {"train": train, "test": test})
    return path


def test_round_trip_yields_the_same_examples_per_client(database):
    train = read_sql_client_data(database, "train", FEATURES)
    assert list(train.client_ids) == ["alice", "bob", "o'brien"]
    assert train.element_type_structure == FEATURES
    for client_id, expected in CLIENTS.items():
        assert train.num_examples(client_id) == len(expected["y"])
        elements = list(train.create_tf_dataset_for_client(client_id).as_numpy_iterator())
        np.testing.assert_array_equal(np.stack([e["x"] for e in elements]), expected["x"])
        np.testing.assert_array_equal([e["y"] for e in elements], expected["y"])
        assert [e["name"].decode() for e in elements] == list(expected["name"])
    test = read_sql_client_data(database, "test", FEATURES)
    assert list(test.client_ids) == ["bob"] and test.num_examples("bob") == 2


def test_reading_all_splits_and_raw_protos(database):
    everything = read_sql_client_data(database)
    assert everything.element_type_structure == tf.TensorSpec([], tf.string)
    assert everything.num_examples("bob") == 5
    proto = next(iter(everything.create_tf_dataset_for_client("alice"))).numpy()
    example = tf.train.Example.FromString(proto)
    assert example.features.feature["y"].int64_list.value[0] == CLIENTS["alice"]["y"][0]


def test_numeric_clients_are_array_datasets_built_without_tf_data(database):
    # Replaces a check that one traced tf.function built every client's SqlDataset:
    # clients are now NumPy-backed, built with no tf.data graph at all.
    numeric = {key: spec for key, spec in FEATURES.items() if spec.dtype != tf.string}
    train = read_sql_client_data(database, "train", numeric)
    for client_id, expected in CLIENTS.items():
        dataset = train.create_tf_dataset_for_client(client_id)
        assert isinstance(dataset, ArrayDataset) and dataset.num_examples == len(expected["y"])


def test_unknown_split_error_lists_the_splits(database):
    with pytest.raises(
        ClientDataError, match="'validation'.*test.*train|'validation'.*train.*test"
    ):
        read_sql_client_data(database, "validation", FEATURES)


def test_existing_file_is_not_overwritten_by_default(database):
    with pytest.raises(ClientDataError, match="overwrite=True"):
        write_sql_client_data(database, {"train": ClientData.from_tensor_slices(CLIENTS)})


def test_nested_elements_cannot_be_written(tmp_path):
    nested = ClientData.from_tensor_slices({"a": (np.zeros([2]), np.zeros([2]))})
    with pytest.raises(ClientDataError, match="flat mappings"):
        write_sql_client_data(tmp_path / "x.sqlite", {"train": nested})
    assert not (tmp_path / "x.sqlite").exists()


def test_file_without_client_index_reads_with_a_warning(tmp_path):
    path = tmp_path / "tff_style.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(
            "CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)"
        )
        connection.execute(
            "CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER)"
        )
        connection.execute("INSERT INTO examples VALUES ('train', 'a', ?)", (b"",))
        connection.execute("INSERT INTO client_metadata VALUES ('a', 'train', 1)")
        connection.commit()
    with pytest.warns(UserWarning, match="CREATE INDEX"):
        population = read_sql_client_data(path, "train")
    assert population.num_examples("a") == 1


def test_file_with_other_tables_is_rejected(tmp_path):
    path = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE examples (id INTEGER)")
    with pytest.raises(ClientDataError, match="not in TFF's SQLite format"):
        read_sql_client_data(path)


def test_schema_helper_creates_an_indexed_empty_population(tmp_path):
    path = tmp_path / "empty.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        create_schema(connection)
        connection.commit()
    with pytest.raises(ClientDataError, match="no clients"):
        read_sql_client_data(path, "train")
