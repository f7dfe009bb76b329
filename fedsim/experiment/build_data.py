"""Data blocks -> train and test populations of ``(x, y)`` elements, and the number of classes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import attrs
import numpy as np
import tensorflow as tf

from fedsim.data import ClientData
from fedsim.data import partition as partitioners
from fedsim.data import preprocessing as prep
from fedsim.data.labels import whole_labels
from fedsim.data.npz import NpzError, read_npz
from fedsim.experiment import data_blocks as blocks

#: The most classes ``arrays`` data infers from its labels; more must be declared (``data.num_classes``).
MAX_INFERRED_CLASSES = 100_000


class DataBuildError(ValueError):
    """A data block whose data cannot be read; the message names the file and the fix."""


class ArraysFileError(DataBuildError):
    """A ``.npz`` of ``arrays`` data that is damaged, not a ``.npz``, or without usable ``x`` and ``y``."""


class LabelRangeError(DataBuildError):
    """Labels beyond the declared number of classes, or too large to infer the number from."""


class SplitMismatchError(DataBuildError):
    """Test examples of another structure, dtype or shape than the train examples."""


@attrs.frozen
class Population:
    """Train and test clients of one data set; elements are ``(x, y)`` tuples."""

    train: ClientData
    test: ClientData
    num_classes: int


def build_population(data: blocks.DataBlock, seed: int) -> Population:
    """Loads (or generates) the data set of ``data``; every random choice derives from ``seed``.

    The test split is checked at the door like the train split, so a bad one
    is refused before the first round rather than failing its evaluation:
    its examples must be shaped like the train examples, and for data read
    from the user's files (LEAF, arrays) every label must be a class index.
    TFF's SQLite files are not read for labels (a SQL query per client):
    their classes are the published data set's.
    """
    population = _load(data, seed)
    check_test_split(population)
    return population


def _load(data: blocks.DataBlock, seed: int) -> Population:
    if isinstance(data, blocks.SyntheticData):
        from fedsim.datasets import load_synthetic
        from fedsim.datasets.synthetic import NUM_CLASSES

        data_seed = seed if data.seed is None else data.seed
        train, test = load_synthetic(data.alpha, data.beta, data.iid, data.num_devices, data.test_fraction, data_seed)
        return Population(train, test, NUM_CLASSES)
    if isinstance(data, blocks.EmnistData):
        from fedsim.datasets import emnist

        train, test = emnist.load_data(data.only_digits, data.cache_dir, data.download)
        images = prep.compose(prep.select("pixels", "label"), prep.reshape([28, 28, 1]))
        return Population(train.preprocess(images), test.preprocess(images), 10 if data.only_digits else 62)
    if isinstance(data, blocks.ShakespeareData):
        from fedsim.datasets import shakespeare

        train, test = shakespeare.load_data(data.cache_dir, data.download)
        sequences = prep.next_char_sequences(data.sequence_length)
        return Population(train.preprocess(sequences), test.preprocess(sequences), prep.CHAR_VOCAB_SIZE)
    if isinstance(data, blocks.LeafData):
        from fedsim.data.leaf import load_leaf

        train, test = load_leaf(data.train_dir, data.test_dir)
        pairs = prep.select("x", "y")
        population = Population(train.preprocess(pairs), test.preprocess(pairs), data.num_classes)
        check_labels(population)
        return population
    if isinstance(data, blocks.ArraysData):
        return _partitioned_arrays(data, seed)
    raise TypeError(f"no builder for data block {data!r}")


def _partitioned_arrays(data: blocks.ArraysData, seed: int) -> Population:
    x, y = _read_arrays(Path(data.path))
    num_classes = _num_classes(y, data.num_classes, Path(data.path))
    y = y.astype(np.int32)  # safe once every label is below num_classes
    if not data.shuffle and isinstance(data.partitioner, blocks.IidPartition):
        # data.shuffle = false: the file's rows dealt in order, so a protocol written against the file holds.
        parts = np.array_split(np.arange(len(y)), data.num_clients)
    else:
        parts = _partition(data.partitioner, y, data.num_clients, seed)
    # Each client keeps its first examples for training and the rest for testing;
    # the partition already drew the examples at random.
    cuts = [len(p) - int(round(data.test_fraction * len(p))) for p in parts]
    train = partitioners.to_client_data((x, y), [p[:c] for p, c in zip(parts, cuts)])
    test = partitioners.to_client_data((x, y), [p[c:] for p, c in zip(parts, cuts)])
    return Population(train, test, num_classes)


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` of a ``.npz``; integer labels (whole-number float labels cast), none negative."""
    write_it = "write it with numpy.savez(path, x=features, y=labels)"
    try:
        arrays = read_npz(path)
    except NpzError as error:
        raise ArraysFileError(f"cannot read {path}: {error.reason}; {write_it}") from None
    if not {"x", "y"} <= arrays.keys():
        raise ArraysFileError(f"{path} has members {sorted(arrays)}, not the arrays 'x' and 'y'; {write_it}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 0 or y.ndim != 1:
        raise ArraysFileError(
            f"{path}: 'x' must hold one row per example and 'y' one label per row, got shapes {x.shape} "
            f"and {y.shape}"
        )
    if len(x) != len(y):
        raise ArraysFileError(f"{path}: 'x' has {len(x)} rows but 'y' has {len(y)} labels; give one label per row")
    y = whole_labels(y, str(path))  # a float label 1.5 is refused, 1.0 becomes class 1
    if not np.issubdtype(y.dtype, np.integer):
        raise ArraysFileError(f"{path}: 'y' must hold integer class labels, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataBuildError(f"{path}: label {int(y.min())} at row {int(np.argmin(y))} is negative; labels are 0 .. C-1")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataBuildError(f"{path}: 'x' holds NaN or Inf (first in row {row}); clean or drop those rows")
    return x, y


def _num_classes(y: np.ndarray, declared: Optional[int], path: Path) -> int:
    """``declared`` when every label is below it; else the largest label + 1, within a bound.

    Never more than ``MAX_INFERRED_CLASSES``, nor more classes than examples:
    one stray label of 1e9 must not size a model of a billion outputs.
    """
    if declared is not None:
        beyond = np.flatnonzero(y >= declared)
        if beyond.size:
            row = int(beyond[0])
            raise LabelRangeError(
                f"{path}: label {int(y[row])} at row {row} is outside [0, {declared}) of data.num_classes = "
                f"{declared}; raise data.num_classes above every label, or fix the label"
            )
        return declared
    if not len(y):
        return 0
    row = int(np.argmax(y))
    inferred, bound = int(y[row]) + 1, min(len(y), MAX_INFERRED_CLASSES)
    if inferred > bound:
        raise LabelRangeError(
            f"{path}: the largest label is {int(y[row])} (row {row}), which would make {inferred} classes, more "
            f"than the {bound} fedsim infers at most (the number of examples, and never over "
            f"{MAX_INFERRED_CLASSES:,}); set data.num_classes to the number of classes, or fix the label"
        )
    return inferred


def check_test_split(population: Population) -> None:
    """Raises ``SplitMismatchError`` when test examples are not shaped like train examples.

    Compares the element specs (structure, dtypes, example shapes) of the
    first client of each split; within a split, every client shares one spec
    (``ClientData`` checks it for arrays, a SQLite file parses every client
    alike). Cheap for every data kind: no example is read.
    """
    train_id, test_id = population.train.client_ids[0], population.test.client_ids[0]
    train_spec = population.train.element_type_structure
    test_spec = population.test.element_type_structure
    if not _same_specs(train_spec, test_spec):
        raise SplitMismatchError(
            f"test client {test_id!r} has examples {_describe(test_spec)}, but train client {train_id!r} has "
            f"{_describe(train_spec)}; the model is built for the train split's examples: give the test split "
            "the same features (dtype and shape)"
        )


def _same_specs(a: Any, b: Any) -> bool:
    try:
        tf.nest.assert_same_structure(a, b)
    except (ValueError, TypeError):
        return False
    return all(x == y for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)))


def _describe(spec: Any) -> str:
    """``x float32 (784,), y int64 ()`` for an ``(x, y)`` spec."""
    def leaves(part: Any) -> str:
        described = tf.nest.map_structure(lambda s: f"{s.dtype.name} {tuple(s.shape.as_list())}", part)
        return described if isinstance(described, str) else str(described)

    if isinstance(spec, tuple) and len(spec) == 2:
        return f"x {leaves(spec[0])}, y {leaves(spec[1])}"
    return leaves(spec)


def check_labels(population: Population) -> None:
    """Raises ``DataBuildError`` naming the client when a label is not an integer in ``[0, num_classes)``.

    Reads every client's labels once; for populations held in files the user
    wrote (LEAF), where a wrong ``num_classes`` would otherwise surface as a
    client failure in the middle of a run.
    """
    for split, clients in (("train", population.train), ("test", population.test)):
        for client_id in clients.client_ids:
            labels = np.concatenate([np.atleast_1d(y) for _, y in clients.create_tf_dataset_for_client(client_id)
                                     .as_numpy_iterator()] or [np.zeros(0, np.int64)])
            if labels.dtype.kind not in "iu":  # e.g. LEAF Shakespeare's next characters
                raise DataBuildError(
                    f"{split} client {client_id!r} has label {labels[0]!r} of dtype {labels.dtype}; "
                    "labels must be integer class indices 0 .. num_classes-1: map them to integers in the files"
                )
            bad = labels[(labels < 0) | (labels >= population.num_classes)]
            if bad.size:
                raise DataBuildError(
                    f"{split} client {client_id!r} has label {int(bad[0])}, outside [0, {population.num_classes}); "
                    "set data.num_classes to the number of classes, or fix the labels"
                )


def _partition(block: blocks.PartitionerBlock, labels: np.ndarray, num_clients: int, seed: int):
    if isinstance(block, blocks.IidPartition):
        return partitioners.iid(len(labels), num_clients, seed)
    if isinstance(block, blocks.DirichletPartition):
        return partitioners.dirichlet_label_skew(labels, num_clients, block.alpha, seed, block.min_size)
    if isinstance(block, blocks.ShardsPartition):
        return partitioners.pathological_shards(labels, num_clients, block.shards_per_client, seed)
    if isinstance(block, blocks.QuantitySkewPartition):
        return partitioners.quantity_skew(len(labels), num_clients, block.exponent, seed, block.min_examples)
    raise TypeError(f"no builder for partitioner block {block!r}")
