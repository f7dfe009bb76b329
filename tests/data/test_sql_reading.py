"""SQLite clients read with sqlite3 and one parse op equal the SqlDataset reading they replace.

The reference below is the reading ``fedsim.data.sql`` did before, written out
here on its own: ``tf.data.experimental.SqlDataset`` over the client's rows
``ORDER BY rowid``, then ``tf.io.parse_single_example`` and a cast per element.
``tf.train.Example`` features of a fixed shape are all the format reads
(``read_sql_client_data`` rejects any other shape), so there are no ragged
features to compare.
"""

import concurrent.futures
import contextlib
import gc
import sqlite3
import threading
import weakref

import numpy as np
import pytest
import tensorflow as tf

from fedsim.data import ClientDataError, read_sql_client_data
from fedsim.data.array_dataset import ArrayDataset
from fedsim.data.sql import _ThreadConnections, create_schema
from fedsim.data.tf_example import serialize_example

# Stored as float32 and int64 lists (all a tf.train.Example holds), read back as other dtypes.
NUMERIC = {
    "f16": tf.TensorSpec([3], tf.float16),
    "f32": tf.TensorSpec([2, 2], tf.float32),
    "f64": tf.TensorSpec([], tf.float64),
    "bf16": tf.TensorSpec([2], tf.bfloat16),
    "i8": tf.TensorSpec([], tf.int8),
    "u8": tf.TensorSpec([2], tf.uint8),
    "i32": tf.TensorSpec([], tf.int32),
    "i64": tf.TensorSpec([1], tf.int64),
    "flag": tf.TensorSpec([], tf.bool),
}
WITH_STRINGS = {**NUMERIC, "name": tf.TensorSpec([], tf.string), "tags": tf.TensorSpec([2], tf.string)}


def _example(rng, row):
    """One example's stored values: floats that round when narrowed, integers that wrap."""
    return {
        "f16": (rng.normal(size=3) / 3).astype(np.float32),
        "f32": rng.normal(size=(2, 2)).astype(np.float32),
        "f64": np.float32(rng.normal()),
        "bf16": (rng.normal(size=2) / 3).astype(np.float32),
        "i8": np.int64(rng.integers(-1000, 1000)),
        "u8": rng.integers(-300, 300, size=2),
        "i32": np.int64(rng.integers(-(2**40), 2**40)),
        "i64": rng.integers(-(2**62), 2**62, size=1),
        "flag": np.int64(rng.integers(0, 3)),
        "name": np.array(f"row {row} ends in a NUL\x00".encode(), dtype=object),  # object: kept whole
        "tags": np.array([f"t{row}", ""]),
    }


# Rows are inserted interleaved across clients and splits, with explicit rowids
# in another order than insertion, so rowid order is neither insertion nor client order.
ROWS = [  # (rowid, split, client)
    (9, "train", "bob"), (3, "train", "alice"), (7, "test", "bob"), (1, "train", "bob"),
    (12, "train", "o'brien"), (2, "train", "bob"), (11, "test", "alice"), (5, "train", "alice"),
]
CLIENT_IDS = ["alice", "bob", "o'brien", "empty"]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    path = tmp_path_factory.mktemp("sql_reading") / "population.sqlite"
    rng = np.random.default_rng(0)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        create_schema(connection)
        for rowid, split, client in ROWS:
            connection.execute(
                "INSERT INTO examples (rowid, split_name, client_id, serialized_example_proto) "
                "VALUES (?, ?, ?, ?)",
                (rowid, split, client, serialize_example(_example(rng, rowid))),
            )
        for client in CLIENT_IDS:
            for split in ("train", "test"):
                count = sum(1 for _, s, c in ROWS if (s, c) == (split, client))
                connection.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (client, split, count))
        connection.commit()
    return path


def sqldataset_reference(path, client_id, split_name, features):
    """The reading before: SqlDataset over the client's rows, a parse and casts per element."""
    quoted = client_id.replace("'", "''")
    split = "" if split_name is None else f" AND split_name = '{split_name}'"
    query = (
        f"SELECT serialized_example_proto FROM examples WHERE client_id = '{quoted}'{split} "
        "ORDER BY rowid"
    )
    dataset = tf.data.experimental.SqlDataset("sqlite", str(path), query, tf.string)
    if features is None:
        return dataset
    stored = {tf.string: tf.string, True: tf.float32, False: tf.int64}
    parse_spec = {
        name: tf.io.FixedLenFeature(
            spec.shape, stored.get(spec.dtype, stored[spec.dtype.is_floating])
        )
        for name, spec in features.items()
    }

    def parse(proto):
        parsed = tf.io.parse_single_example(proto, parse_spec)
        return {name: tf.cast(parsed[name], spec.dtype) for name, spec in features.items()}

    return dataset.map(parse)


def assert_same_elements(actual, expected):
    assert actual.element_spec == expected.element_spec
    actual_elements = list(actual.as_numpy_iterator())
    expected_elements = list(expected.as_numpy_iterator())
    assert len(actual_elements) == len(expected_elements)
    for got, want in zip(actual_elements, expected_elements):
        for got_leaf, want_leaf in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
            got_leaf, want_leaf = np.asarray(got_leaf), np.asarray(want_leaf)
            assert got_leaf.dtype == want_leaf.dtype and got_leaf.shape == want_leaf.shape
            if want_leaf.dtype == object:
                assert got_leaf.tolist() == want_leaf.tolist()
            else:  # bit for bit: the same rounding and wrapping of the casts
                assert got_leaf.tobytes() == want_leaf.tobytes()


@pytest.mark.parametrize("split_name", ["train", "test", None])
@pytest.mark.parametrize("features", [NUMERIC, WITH_STRINGS, None], ids=["numeric", "strings", "raw"])
def test_every_client_equals_the_sqldataset_reading(database, split_name, features):
    population = read_sql_client_data(database, split_name, features)
    for client_id in population.client_ids:
        assert_same_elements(
            population.create_tf_dataset_for_client(client_id),
            sqldataset_reference(database, client_id, split_name, features),
        )


def test_examples_come_in_rowid_order(database):
    population = read_sql_client_data(database, None, {"i8": NUMERIC["i8"]})
    bob_rowids = sorted(rowid for rowid, _, client in ROWS if client == "bob")
    rng = np.random.default_rng(0)  # the values _example drew for each row, in insertion order
    stored = {rowid: _example(rng, rowid)["i8"] for rowid, _, _ in ROWS}
    expected = [np.int64(stored[rowid]).astype(np.int8) for rowid in bob_rowids]
    assert [e["i8"] for e in population.create_tf_dataset_for_client("bob").as_numpy_iterator()] == expected


def test_numeric_clients_are_array_datasets_the_executor_reads_directly(database):
    population = read_sql_client_data(database, "train", NUMERIC)
    dataset = population.create_tf_dataset_for_client("bob")
    assert isinstance(dataset, ArrayDataset) and dataset.num_examples == 3
    batches, mask = dataset.batch(2).batched_arrays()  # what cohort_data.array_client_tensors reads
    assert mask.tolist() == [[1.0, 1.0], [1.0, 0.0]] and batches["f32"].shape == (2, 2, 2, 2)


# ArrayDataset.from_arrays keeps strings on tf.data (NumPy pads and types them differently).
def test_string_features_fall_back_to_plain_tf_data_and_keep_their_bytes(database):
    dataset = read_sql_client_data(database, "train", WITH_STRINGS).create_tf_dataset_for_client("bob")
    assert not isinstance(dataset, ArrayDataset)
    bob_train_rowids = sorted(r for r, split, client in ROWS if (split, client) == ("train", "bob"))
    expected = [f"row {rowid} ends in a NUL\x00".encode() for rowid in bob_train_rowids]
    assert [e["name"] for e in dataset.as_numpy_iterator()] == expected


def test_raw_protos_fall_back_to_plain_tf_data(database):
    dataset = read_sql_client_data(database, "train").create_tf_dataset_for_client("bob")
    assert not isinstance(dataset, ArrayDataset)
    assert dataset.element_spec == tf.TensorSpec([], tf.string) and dataset.cardinality() == 3


def test_a_client_without_rows_is_an_empty_dataset(database):
    population = read_sql_client_data(database, "train", NUMERIC)
    assert_same_elements(
        population.create_tf_dataset_for_client("empty"),
        sqldataset_reference(database, "empty", "train", NUMERIC),
    )


def test_raw_rows_of_other_types_read_as_sqldataset_read_them(tmp_path):
    path = tmp_path / "loose.sqlite"
    values = [b"ends in NULs\x00\x00", "text é", None, 12, 1.5, b""]
    with contextlib.closing(sqlite3.connect(path)) as connection:  # no NOT NULL, as in some TFF files
        connection.execute("CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)")
        connection.execute("CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER)")
        connection.execute("CREATE INDEX by_client ON examples (client_id)")
        connection.executemany("INSERT INTO examples VALUES ('train', 'a', ?)", [(v,) for v in values])
        connection.execute("INSERT INTO client_metadata VALUES ('a', 'train', ?)", (len(values),))
        connection.commit()
    dataset = read_sql_client_data(path, "train").create_tf_dataset_for_client("a")
    assert_same_elements(dataset, sqldataset_reference(path, "a", "train", None))


def test_a_garbage_proto_after_the_first_is_a_client_data_error_naming_file_and_client(tmp_path):
    path = tmp_path / "garbage.sqlite"
    good = serialize_example({"i64": np.int64([1])})
    with contextlib.closing(sqlite3.connect(path)) as connection:
        create_schema(connection)
        connection.executemany(
            "INSERT INTO examples VALUES ('train', ?, ?)", [("a", good), ("b", good), ("b", b"\xff\xfe")]
        )
        connection.executemany("INSERT INTO client_metadata VALUES (?, 'train', ?)", [("a", 1), ("b", 2)])
        connection.commit()
    population = read_sql_client_data(path, "train", {"i64": NUMERIC["i64"]})
    with pytest.raises(ClientDataError, match=rf"{path}.*client 'b'"):
        population.create_tf_dataset_for_client("b")


def test_a_client_is_read_per_request_and_not_kept(database):
    population = read_sql_client_data(database, "train", NUMERIC)
    first = population.create_tf_dataset_for_client("bob")
    assert population.create_tf_dataset_for_client("bob") is not first
    released = weakref.ref(first)
    del first
    gc.collect()
    assert released() is None


def test_threads_read_concurrently_each_with_its_own_connection(database):
    population = read_sql_client_data(database, None, NUMERIC)
    client_ids = list(population.client_ids) * 8

    def read(client_id):
        return [e["f32"] for e in population.create_tf_dataset_for_client(client_id).as_numpy_iterator()]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        in_threads = list(pool.map(read, client_ids))
    assert all(np.array_equal(a, b) for a, b in zip(in_threads, [read(c) for c in client_ids]))


def test_connections_are_one_per_thread_and_process(database, monkeypatch):
    connections = _ThreadConnections(database)
    here = connections.get()
    assert connections.get() is here
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(connections.get()))
    thread.start()
    thread.join()
    assert elsewhere[0] is not here
    monkeypatch.setattr("fedsim.data.sql.os.getpid", lambda: -1)  # as in a forked child
    assert connections.get() is not here


def test_connections_are_read_only_and_do_not_block_writers(database):
    population = read_sql_client_data(database, "train", NUMERIC)
    population.create_tf_dataset_for_client("bob")  # leaves this thread's connection open
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        _ThreadConnections(database).get().execute("DELETE FROM examples")
    with contextlib.closing(sqlite3.connect(database, timeout=0)) as writer:
        writer.execute("INSERT INTO examples VALUES ('other', 'x', X'')")
        writer.commit()  # timeout=0: raises "database is locked" if a reader held a lock
        writer.execute("DELETE FROM examples WHERE split_name = 'other'")
        writer.commit()
