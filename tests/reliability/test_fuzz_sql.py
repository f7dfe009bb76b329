"""Fuzzing the TFF SQLite reader: a damaged file is a ``ClientDataError`` when it is opened.

Each example writes a small valid file with ``write_sql_client_data``, damages
it one way (header bytes, truncation, a missing table or column, NULL or
non-integer metadata, a garbage first proto) or asks for features that do
not match, and opens it. ``read_sql_client_data`` must raise
``ClientDataError`` naming the file, or return a population whose every
client reads back the original examples.

Not covered here: a garbage proto in a later row is met when that client's
dataset is requested (a ``ClientDataError`` naming the file and client, see
``tests/data/test_sql_reading.py``), since checking every row on open would
read the whole file.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsim.data import (
    ClientData,
    ClientDataError,
    read_sql_client_data,
    write_sql_client_data,
)

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FEATURES = {"x": tf.TensorSpec([2], tf.float32), "y": tf.TensorSpec([], tf.int64)}
CLIENTS = {
    "alice": {"x": np.float32([[0.5, 1.0], [2.0, 3.0]]), "y": np.int64([1, 2])},
    "bob": {"x": np.float32([[4.0, 5.0]]), "y": np.int64([7])},
}


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sql") / "valid.sqlite"
    write_sql_client_data(path, {"train": ClientData.from_tensor_slices(CLIENTS)})
    return path


def _copy(valid_file: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sql") / "damaged.sqlite"
    shutil.copyfile(valid_file, path)
    return path


def _assert_reads_back_originals(path: Path, features=FEATURES) -> None:
    population = read_sql_client_data(path, split_name="train", features=features)
    assert sorted(population.client_ids) == sorted(CLIENTS)
    for client_id, arrays in CLIENTS.items():
        elements = list(population.create_tf_dataset_for_client(client_id).as_numpy_iterator())
        assert len(elements) == len(arrays["y"])
        for index, element in enumerate(elements):
            for name, spec in features.items():
                expected = np.asarray(arrays[name][index]).astype(spec.dtype.as_numpy_dtype)
                np.testing.assert_array_equal(element[name], expected)


def _read_or_fail_naming_file(path: Path, features=FEATURES) -> None:
    try:
        _assert_reads_back_originals(path, features)
    except ClientDataError as error:
        assert str(path) in str(error)


def _sql(path: Path, *statements: str, parameters: tuple = ()) -> None:
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement, parameters if "?" in statement else ())


@SETTINGS
@given(data=st.data())
def test_damaged_bytes_fail_on_open_or_read_back(valid_file, tmp_path_factory, data):
    path = _copy(valid_file, tmp_path_factory)
    content = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        # Within the first page: the schema, so the damage is met on open.
        content = content[: data.draw(st.integers(0, 4095), label="length")]
    else:
        for position in data.draw(
            st.lists(st.integers(0, 99), min_size=1, max_size=4), label="header"
        ):
            content[position] ^= data.draw(st.integers(1, 255), label="xor")
    path.write_bytes(bytes(content))
    _read_or_fail_naming_file(path)


SCHEMA_DAMAGE = {
    "no examples table": ["DROP TABLE examples"],
    "no metadata table": ["DROP TABLE client_metadata"],
    "renamed proto column": [
        "ALTER TABLE examples RENAME COLUMN serialized_example_proto TO proto"
    ],
    "renamed count column": ["ALTER TABLE client_metadata RENAME COLUMN num_examples TO n"],
    "no rows": ["DELETE FROM client_metadata"],
}
# client_metadata rebuilt without NOT NULL, so that bad values can be stored.
LOOSE_METADATA = [
    "DROP TABLE client_metadata",
    "CREATE TABLE client_metadata (client_id, split_name, num_examples)",
]
METADATA_ROWS = {
    "NULL count": [("alice", "train", 2), ("bob", "train", None)],
    "text count": [("alice", "train", "two"), ("bob", "train", 1)],
    "float count": [("alice", "train", 2.5), ("bob", "train", 1)],
    "NULL client id": [(None, "train", 2), ("bob", "train", 1)],
}


@pytest.mark.parametrize("damage", sorted(SCHEMA_DAMAGE))
def test_schema_damage_is_a_client_data_error(valid_file, tmp_path_factory, damage):
    path = _copy(valid_file, tmp_path_factory)
    _sql(path, *SCHEMA_DAMAGE[damage])
    with pytest.raises(ClientDataError, match="valid.sqlite|damaged.sqlite"):
        read_sql_client_data(path, split_name="train", features=FEATURES)


@pytest.mark.parametrize("rows", sorted(METADATA_ROWS))
def test_bad_metadata_rows_are_a_client_data_error(valid_file, tmp_path_factory, rows):
    path = _copy(valid_file, tmp_path_factory)
    _sql(path, *LOOSE_METADATA)
    with sqlite3.connect(path) as connection:
        connection.executemany("INSERT INTO client_metadata VALUES (?, ?, ?)", METADATA_ROWS[rows])
    with pytest.raises(ClientDataError, match="client_metadata .*integer count"):
        read_sql_client_data(path, split_name="train", features=FEATURES)


@SETTINGS
@given(garbage=st.binary(max_size=40) | st.text(max_size=10))
def test_garbage_first_proto_fails_on_open(valid_file, tmp_path_factory, garbage):
    path = _copy(valid_file, tmp_path_factory)
    _sql(
        path,
        "UPDATE examples SET serialized_example_proto = ? WHERE rowid = "
        "(SELECT MIN(rowid) FROM examples)",
        parameters=(garbage,),
    )
    # Some short byte strings are valid protos of an empty Example; those lack
    # the features and must fail as well.
    with pytest.raises(ClientDataError, match="first example .* does not parse"):
        read_sql_client_data(path, split_name="train", features=FEATURES)


specs = st.fixed_dictionaries(
    {},
    optional={
        name: st.builds(
            tf.TensorSpec,
            st.sampled_from([[], [1], [2], [3]]),
            st.sampled_from([tf.float32, tf.float64, tf.int64, tf.int32, tf.bool, tf.string]),
        )
        for name in ("x", "y", "z")
    },
).filter(bool)


@SETTINGS
@given(features=specs)
def test_mismatched_features_fail_on_open_or_read_back(valid_file, features):
    _read_or_fail_naming_file(valid_file, features)
