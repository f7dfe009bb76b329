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
    """Label skew: each label split over clients in Dirichlet(alpha) shares (small alpha: skewed)."""

    name: str = "dirichlet"
    alpha: float = attrs.field(default=0.5, validator=positive)


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


class DataBlock(Block):
    """The population: train and test clients."""

    registry: ClassVar[dict[str, type]] = {}


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
    """A LEAF data set already generated on disk: its train and test split directories."""

    name: str = "leaf"
    train_dir: str = attrs.field(kw_only=True)
    test_dir: str = attrs.field(kw_only=True)
    num_classes: int = attrs.field(kw_only=True, validator=positive)


@attrs.frozen
class ArraysData(DataBlock):
    """A centralized ``.npz`` with arrays ``x`` and ``y`` (integer labels), partitioned into clients.

    Each client's examples are split ``1 - test_fraction`` / ``test_fraction``
    into its train and test data.
    """

    name: str = "arrays"
    path: str = attrs.field(kw_only=True)
    num_clients: int = attrs.field(default=100, validator=positive)
    test_fraction: float = attrs.field(default=0.1, validator=fraction)
    partitioner: PartitionerBlock = attrs.field(factory=IidPartition)


DataBlock.registry = {
    "synthetic": SyntheticData,
    "emnist": EmnistData,
    "shakespeare": ShakespeareData,
    "leaf": LeafData,
    "arrays": ArraysData,
}
