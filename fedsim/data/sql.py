"""Populations stored in TensorFlow Federated's SQLite format.

The format (as in TFF's ``sql_client_data``) has two tables::

    examples(split_name TEXT, client_id TEXT, serialized_example_proto BLOB)
    client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)

with one serialized ``tf.train.Example`` per row of ``examples``. Reading
loads only the client ids and sizes (as NumPy arrays) up front. A client's
dataset is built when it is requested: one ``sqlite3`` query fetches its rows
(``ORDER BY rowid``, the order the former ``SqlDataset`` reading gave), one parse op
turns them into arrays, and the dataset is an ``ArrayDataset`` over those
arrays, as for a population built from in-memory arrays. A client of 4
examples of 60 floats costs 0.4-0.6 ms to build and read into the
vectorized executor's arrays, against 18-22 ms with the
``tf.data.experimental.SqlDataset`` and per-example parse ``map`` this module
used before (a tf.data graph built and run per client). Raw protos
(``features=None``) and populations with a string feature get plain
``from_tensor_slices`` datasets of the parsed tensors instead
(``ArrayDataset.from_arrays`` keeps strings on tf.data).

Each thread (and process) reading the file opens its own read-only
connection on first use and keeps it; an idle connection holds no lock.
The population's ``client_source`` is the file's path, split and features, so
a worker on any node that sees the file reads its clients itself.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

from fedsim.data.array_dataset import ArrayDataset
from fedsim.data.client_data import ClientData
from fedsim.data.client_ids import SortedArrayIds
from fedsim.data.errors import ClientDataError
from fedsim.data.sources import ClientSource
from fedsim.data.tf_example import (
    Features,
    build_batch_parser,
    build_parser,
    check_flat_features,
    serialize_example,
)

_SCHEMA = (
    "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
    "serialized_example_proto BLOB NOT NULL)",
    "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, "
    "num_examples INTEGER NOT NULL)",
)
# Without an index on client_id every client read scans the whole table.
_INDEX = "CREATE INDEX examples_by_client ON examples (client_id, split_name)"
_REQUIRED_COLUMNS = {
    "examples": {"split_name", "client_id", "serialized_example_proto"},
    "client_metadata": {"client_id", "split_name", "num_examples"},
}
_FETCH_CHUNK = 65536


class SqliteFileError(ClientDataError):
    """A file that is not a readable SQLite database in TFF's format (damaged, truncated, another file).

    ``reason`` says what is wrong without the path or the fix, for callers that name the file themselves.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def read_sql_client_data(
    database_path: str | os.PathLike,
    split_name: str | None = None,
    features: Features | None = None,
) -> ClientData:
    """A population read from a SQLite file in TFF's format.

    Args:
      database_path: the ``.sqlite`` file.
      split_name: keep only rows of this split (e.g. ``"train"``); ``None`` keeps all.
      features: ``{name: tf.TensorSpec}`` to parse each proto into; ``None``
        yields the serialized protos as scalar ``tf.string`` (as TFF does).
    """
    path = Path(database_path).expanduser()
    if not path.is_file():
        raise ClientDataError(
            f"no SQLite file at {path}; check the path or write one with write_sql_client_data"
        )
    if features is not None:
        check_flat_features(features, f"features for {path}")
    try:
        with _read_only(path) as connection:
            _check_schema(connection, path)
            encoded_ids, counts = _load_metadata(connection, split_name, path)
            if features is not None:
                _check_first_example(connection, split_name, features, path)
            if not _has_client_index(connection):
                warnings.warn(
                    f"{path}: table `examples` has no index starting with client_id, so each "
                    "client read scans the whole file; add one once with: "
                    f"sqlite3 {path} '{_INDEX}'",
                    stacklevel=2,
                )
    except sqlite3.DatabaseError as error:  # not SQLite at all, or a corrupt page
        raise _unreadable(path, error) from None
    if len(encoded_ids) == 0:
        raise ClientDataError(
            f"{path} has no clients for split_name={split_name!r}; "
            f"splits present: {_split_names(path)}"
        )
    client_ids = SortedArrayIds(encoded_ids)
    dataset_fn = _ClientReader(path.resolve(), split_name, features)

    def num_examples_fn(client_id: str) -> int:
        return int(counts[client_ids.index(client_id)])

    # An absolute path: a worker that reads the file itself may start in another directory.
    source = ClientSource(read_sql_client_data, (str(path.resolve()), split_name, features))
    return ClientData(client_ids, dataset_fn, num_examples_fn=num_examples_fn, client_source=source)


def check_sqlite_file(database_path: str | os.PathLike) -> None:
    """Raises ``SqliteFileError`` unless the file opens as SQLite and has TFF's two tables.

    Reads the schema only (a few pages), so it is cheap on a large file.
    """
    path = Path(database_path).expanduser()
    try:
        with _read_only(path) as connection:
            _check_schema(connection, path)
    except sqlite3.DatabaseError as error:
        raise _unreadable(path, error) from None


def write_sql_client_data(
    database_path: str | os.PathLike, splits: Mapping[str, ClientData], *, overwrite: bool = False
) -> None:
    """Writes ``{split_name: population}`` to one SQLite file in TFF's format.

    Elements must be flat mappings of fixed-shape tensors. The file is
    written to a temporary name and renamed, so a failed write leaves no
    partial file behind.
    """
    path = Path(database_path).expanduser()
    if path.exists() and not overwrite:
        raise ClientDataError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    for split_name, client_data in splits.items():
        check_flat_features(client_data.element_type_structure, f"split {split_name!r}")
    descriptor, temporary = tempfile.mkstemp(suffix=".sqlite", dir=path.parent)
    os.close(descriptor)
    try:
        with contextlib.closing(sqlite3.connect(temporary)) as connection:
            create_schema(connection)
            for split_name, client_data in splits.items():
                for client_id in client_data.client_ids:
                    dataset = client_data.create_tf_dataset_for_client(client_id)
                    protos = (serialize_example(element) for element in dataset.as_numpy_iterator())
                    insert_client(connection, split_name, client_id, protos)
            connection.commit()
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def create_schema(connection: sqlite3.Connection) -> None:
    """Creates TFF's two tables, and an index on ``examples.client_id``, in an empty database."""
    for statement in (*_SCHEMA, _INDEX):
        connection.execute(statement)


def insert_client(
    connection: sqlite3.Connection,
    split_name: str,
    client_id: str,
    serialized_examples: Iterable[bytes],
) -> None:
    """Inserts one client's serialized ``tf.train.Example`` rows and its metadata row."""
    rows = [(split_name, client_id, proto) for proto in serialized_examples]
    connection.executemany(
        "INSERT INTO examples (split_name, client_id, serialized_example_proto) VALUES (?, ?, ?)",
        rows,
    )
    connection.execute(
        "INSERT INTO client_metadata (client_id, split_name, num_examples) VALUES (?, ?, ?)",
        (client_id, split_name, len(rows)),
    )


class _ClientReader:
    """A SQLite population's ``dataset_fn``: one client's rows, parsed into arrays, per call.

    A call runs one ``sqlite3`` query for the client's rows and one parse op
    over all of them, and returns an ``ArrayDataset``, which the vectorized
    executor and evaluation read as arrays without running tf.data. Nothing
    is kept between calls, so a population of 10^6 clients holds only its ids
    and sizes.
    """

    def __init__(self, path: Path, split_name: str | None, features: Features | None):
        self._path = path
        self._features = features
        split_clause, self._split = ("", ()) if split_name is None else (" AND split_name = ?", (split_name,))
        # The rows tf.data.experimental.SqlDataset returned before: rowid order, a BLOB as its
        # bytes, TEXT or a number as the bytes of its text (what sqlite3_column_blob gives),
        # NULL as b"".
        self._query = (
            "SELECT IFNULL(CAST(serialized_example_proto AS BLOB), X'') FROM examples "
            f"WHERE client_id = ?{split_clause} ORDER BY rowid"
        )
        self._parse = None if features is None else build_batch_parser(features)
        self._connections = _ThreadConnections(path)

    def __call__(self, client_id: str) -> tf.data.Dataset:
        protos = self._protos(client_id)
        if self._parse is None:
            return tf.data.Dataset.from_tensor_slices(protos)  # strings stay on tf.data, as in from_arrays
        try:
            arrays = self._parse(protos)
        except tf.errors.InvalidArgumentError as error:
            raise self._unparsable(client_id, error.message.splitlines()[0]) from None
        except UnicodeDecodeError:  # TensorFlow quotes the bad proto in its message, failing on non-UTF-8
            raise self._unparsable(client_id, "a row is not a serialized tf.train.Example") from None
        return ArrayDataset.from_arrays(arrays)

    def _unparsable(self, client_id: str, reason: str) -> ClientDataError:
        return ClientDataError(
            f"{self._path}: an example of client {client_id!r} does not parse as features "
            f"{dict(self._features)}: {reason}"
        )

    def _protos(self, client_id: str) -> tf.Tensor:
        """The client's serialized examples, a ``tf.string`` vector in rowid order."""
        try:
            rows = self._connections.get().execute(self._query, (client_id, *self._split)).fetchall()
        except sqlite3.DatabaseError as error:
            raise _unreadable(self._path, error) from None
        # Through an object array: NumPy's fixed-width bytes would drop the protos' trailing NULs.
        return tf.constant(np.array([proto for (proto,) in rows], dtype=object), tf.string)


class _ThreadConnections:
    """A read-only connection to one file per thread and process, opened on first use.

    A ``sqlite3`` connection must stay in the thread that opened it (and a
    forked process must not reuse its parent's). An idle connection holds no
    lock: ``fetchall`` finishes each query, so writers are never blocked by it.
    """

    def __init__(self, path: Path):
        self._path = path
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        owner, connection = getattr(self._local, "held", (None, None))
        if owner != os.getpid():
            connection = _connect_read_only(self._path)
            self._local.held = (os.getpid(), connection)
        return connection


def _load_metadata(
    connection: sqlite3.Connection, split_name: str | None, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted UTF-8 client ids and their example counts, fetched in chunks.

    Chunks keep the transient Python objects small when there are millions of clients.
    """
    where, parameters = ("", ()) if split_name is None else (" WHERE split_name = ?", (split_name,))
    cursor = connection.execute(
        "SELECT CAST(client_id AS BLOB), SUM(num_examples) FROM client_metadata"
        f"{where} GROUP BY client_id ORDER BY client_id",
        parameters,
    )
    id_chunks, count_chunks = [np.zeros(0, dtype="S1")], [np.zeros(0, dtype=np.int64)]
    while rows := cursor.fetchmany(_FETCH_CHUNK):
        # SUM is NULL for NULL counts and a float once any count is not an integer.
        bad = next((row for row in rows if row[0] is None or type(row[1]) is not int), None)
        if bad is not None:
            raise ClientDataError(
                f"{path}: table client_metadata has client_id={bad[0]!r} with num_examples "
                f"summing to {bad[1]!r}; every row needs a client id and an integer count"
            )
        id_chunks.append(np.array([client_id for client_id, _ in rows], dtype=np.bytes_))
        count_chunks.append(np.array([count for _, count in rows], dtype=np.int64))
    return np.concatenate(id_chunks), np.concatenate(count_chunks)


def _check_first_example(
    connection: sqlite3.Connection, split_name: str | None, features: Features, path: Path
) -> None:
    """Parses the first stored example with ``features``, so a feature of the wrong name,
    dtype or shape is reported when the file is opened, not deep inside a round."""
    where, parameters = ("", ()) if split_name is None else (" WHERE split_name = ?", (split_name,))
    row = connection.execute(
        f"SELECT client_id, serialized_example_proto FROM examples{where} ORDER BY rowid LIMIT 1",
        parameters,
    ).fetchone()
    if row is None:
        return
    client_id, proto = row
    try:
        build_parser(features)(tf.constant(proto, tf.string))
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as error:
        reason = getattr(error, "message", str(error)).splitlines()[0]
        raise ClientDataError(
            f"{path}: the first example (client {client_id!r}) does not parse as features "
            f"{dict(features)}: {reason}; pass the features the file was written with"
        ) from None


def _read_only(path: Path) -> contextlib.closing:
    return contextlib.closing(_connect_read_only(path))


def _connect_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _unreadable(path: Path, error: sqlite3.DatabaseError) -> SqliteFileError:
    return SqliteFileError(
        f"{path} cannot be read as a SQLite database ({error}); the file is damaged or not "
        "SQLite: write it again with write_sql_client_data",
        f"not a readable SQLite database: {error}",
    )


def _check_schema(connection: sqlite3.Connection, path: Path) -> None:
    for table, required in _REQUIRED_COLUMNS.items():
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if not required <= columns:
            reason = f"table {table!r} needs columns {sorted(required)}, has {sorted(columns)}"
            raise SqliteFileError(f"{path} is not in TFF's SQLite format: {reason}", reason)


def _has_client_index(connection: sqlite3.Connection) -> bool:
    for index in connection.execute("PRAGMA index_list(examples)"):
        columns = [row[2] for row in connection.execute(f"PRAGMA index_info('{_quote(index[1])}')")]
        if columns[:1] == ["client_id"] or columns[:2] == ["split_name", "client_id"]:
            return True
    return False


def _split_names(path: Path) -> list[str]:
    with _read_only(path) as connection:
        return [
            row[0] for row in connection.execute("SELECT DISTINCT split_name FROM client_metadata")
        ]


def _quote(text: str) -> str:
    """``text`` safe inside a single-quoted SQL literal."""
    return text.replace("'", "''")
