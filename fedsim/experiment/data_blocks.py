"""Config blocks for the population: data sets and partitioners of centralized data."""
from __future__ import annotations

from typing import ClassVar, Optional

import attrs

from fedsim.experiment.validators import fraction, non_negative, positive
from fedsim.experiment.block import Block


class PartitionerBlock(Block):
    """How a centralized data set is cut into clients."""

    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "iid"


@attrs.frozen
class IidPartition(PartitionerBlock):
    """Shuffled examples dealt into equal parts."""

    name: str = "iid"


@attrs.frozen
class DirichletPartition(PartitionerBlock):
    """Label skew: each label split over clients in Dirichlet(alpha) shares (small alpha: skewed).

    ``min_size`` > 0 redraws the partition (from the same seed) until every
    client holds at least ``min_size`` examples, train and test together, as
    the papers' ``min_require_size`` loop and Flower Datasets'
    ``min_partition_size`` do; 0 (the default) keeps the first draw, empty
    clients included.
    """

    name: str = "dirichlet"
    alpha: float = attrs.field(default=0.5, validator=positive)
    min_size: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class ShardsPartition(PartitionerBlock):
    """McMahan et al. 2017: sorted by label, cut into shards, ``shards_per_client`` each."""

    name: str = "shards"
    shards_per_client: int = attrs.field(default=2, validator=positive)


@attrs.frozen
class QuantitySkewPartition(PartitionerBlock):
    """Power-law client sizes with tail ``exponent`` (small: a few very large clients)."""

    name: str = "quantity_skew"
    exponent: float = attrs.field(default=1.5, validator=positive)
    min_examples: int = attrs.field(default=1, validator=positive)


PartitionerBlock.registry = {
    "iid": IidPartition,
    "dirichlet": DirichletPartition,
    "shards": ShardsPartition,
    "quantity_skew": QuantitySkewPartition,
}


@attrs.frozen
class DataBlock(Block):
    """The population: train and test clients.

    ``shuffle`` (every data block; default true) false promises that no example
    is ever reordered: each client's examples are read in the source's order
    (file order for ``arrays`` and ``leaf``, generation order for
    ``synthetic``) in every round, so ``client.shuffle_buffer`` must stay 0,
    and the ``iid`` partitioner deals the file's rows in order (client ``k``
    of ``K`` gets the ``k``-th of ``K`` contiguous, near-equal parts) instead
    of by a seeded permutation. The other partitioners still draw which
    client holds which example from the seed (that draw is the partition),
    each client's examples in file order.
    """

    registry: ClassVar[dict[str, type]] = {}
    # kw_only: the concrete blocks' own fields keep their positions.
    shuffle: bool = attrs.field(default=True, kw_only=True, validator=attrs.validators.instance_of(bool))


@attrs.frozen
class SyntheticData(DataBlock):
    """FedProx's Synthetic(alpha, beta), generated in memory (60 features, 10 classes)."""

    name: str = "synthetic"
    alpha: float = attrs.field(default=1.0, validator=non_negative)
    beta: float = attrs.field(default=1.0, validator=non_negative)
    iid: bool = False
    num_devices: int = attrs.field(default=30, validator=positive)
    test_fraction: float = attrs.field(default=0.1, validator=fraction)
    seed: Optional[int] = attrs.field(default=None, validator=non_negative)  # None: the run's seed


@attrs.frozen
class EmnistData(DataBlock):
    """Federated EMNIST, one client per writer; images 28x28x1, 10 digits or 62 classes."""

    name: str = "emnist"
    only_digits: bool = True
    cache_dir: Optional[str] = None  # None: ~/.cache/fedsim/datasets
    download: bool = False  # fedsim never fetches data unless asked


@attrs.frozen
class ShakespeareData(DataBlock):
    """Federated Shakespeare, one client per role; next-character sequences."""

    name: str = "shakespeare"
    sequence_length: int = attrs.field(default=80, validator=positive)
    cache_dir: Optional[str] = None
    download: bool = False


@attrs.frozen
class LeafData(DataBlock):
    """A LEAF data set as LEAF's scripts write it: train and test splits on disk.

    ``train_dir`` and ``test_dir`` are each a directory of ``*.json`` shards
    (e.g. ``data/femnist/data/train``) or a single ``.json`` file. Their writers
    may differ (LEAF's split by user): every train writer is a train client and
    evaluation pools every test writer. Clients are sorted by id. Relative paths
    are read from the working directory.
    """

    name: str = "leaf"
    train_dir: str = attrs.field(kw_only=True)
    test_dir: str = attrs.field(kw_only=True)
    num_classes: int = attrs.field(kw_only=True, validator=positive)


@attrs.frozen
class ArraysData(DataBlock):
    """A centralized ``.npz`` with arrays ``x`` and ``y`` (integer labels), partitioned into clients.

    Each client's examples are split ``1 - test_fraction`` / ``test_fraction``
    into its train and test data. Labels are class indices: integers, or
    floats that are whole numbers (1.0; 1.5 and NaN are refused).
    ``num_classes`` (optional) is the number of classes, every label below
    it; unset, it is the largest label + 1, which must not exceed the number
    of examples nor 100,000 (``build_data.MAX_INFERRED_CLASSES``): a stray
    label of 1e9 is an error, not a model with a billion outputs.
    """

    name: str = "arrays"
    path: str = attrs.field(kw_only=True)
    num_clients: int = attrs.field(default=100, validator=positive)
    test_fraction: float = attrs.field(default=0.1, validator=fraction)
    partitioner: PartitionerBlock = attrs.field(factory=IidPartition)
    num_classes: Optional[int] = attrs.field(default=None, kw_only=True, validator=positive)


DataBlock.registry = {
    "synthetic": SyntheticData,
    "emnist": EmnistData,
    "shakespeare": ShakespeareData,
    "leaf": LeafData,
    "arrays": ArraysData,
}
