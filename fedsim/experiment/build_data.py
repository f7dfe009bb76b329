"""Data blocks -> train and test populations of ``(x, y)`` elements, and the number of classes."""
from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from fedsim.data import ClientData
from fedsim.data import partition as partitioners
from fedsim.data import preprocessing as prep
from fedsim.experiment import data_blocks as blocks


class DataBuildError(ValueError):
    """A data block whose data cannot be read; the message names the file and the fix."""


@attrs.frozen
class Population:
    """Train and test clients of one data set; elements are ``(x, y)`` tuples."""

    train: ClientData
    test: ClientData
    num_classes: int


def build_population(data: blocks.DataBlock, seed: int) -> Population:
    """Loads (or generates) the data set of ``data``; every random choice derives from ``seed``."""
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
    return Population(train, test, int(y.max()) + 1)


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"x", "y"} - set(npz.files)
            if missing:
                raise DataBuildError(f"{path} has arrays {sorted(npz.files)}; it needs 'x' and 'y'")
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError) as error:
        raise DataBuildError(f"cannot read {path} as a .npz of arrays 'x' and 'y': {error}") from None
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
        raise DataBuildError(f"{path}: 'y' must be one integer label per row of 'x', got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise DataBuildError(f"{path}: label {int(y.min())} at row {int(np.argmin(y))} is negative; labels are 0 .. C-1")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataBuildError(f"{path}: 'x' holds NaN or Inf (first in row {row}); clean or drop those rows")
    return x, y.astype(np.int32)


def check_labels(population: Population) -> None:
    """Raises ``DataBuildError`` naming the client when a label is outside ``[0, num_classes)``.

    Reads every client's labels once; for populations held in files the user
    wrote (LEAF), where a wrong ``num_classes`` would otherwise surface as a
    client failure in the middle of a run.
    """
    for split, clients in (("train", population.train), ("test", population.test)):
        for client_id in clients.client_ids:
            labels = np.concatenate([np.atleast_1d(y) for _, y in clients.create_tf_dataset_for_client(client_id)
                                     .as_numpy_iterator()] or [np.zeros(0, np.int64)])
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
