"""Config blocks for algorithms. Client and server optimizers are separate blocks of the run.

``shuffle_buffer`` > 0 shuffles each client's examples before batching, in an
order that depends only on (seed, round, client), so resumed runs match.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import attrs

from fedsim.experiment.block import Block
from fedsim.experiment.validators import non_negative, positive


class AlgorithmBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "fedavg"


@attrs.frozen
class FedAvgConfig(AlgorithmBlock):
    """Federated Averaging (McMahan et al. 2017); FedOpt when the server optimizer is adaptive."""

    name: str = "fedavg"
    weighted: bool = True
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class FedProxConfig(AlgorithmBlock):
    """FedProx (Li et al. 2020): FedAvg with a proximal term ``mu/2 ||w - w_server||^2``."""

    name: str = "fedprox"
    mu: float = attrs.field(default=0.01, validator=non_negative)
    weighted: bool = True
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class FedSgdConfig(AlgorithmBlock):
    """FedSGD (McMahan et al. 2017): one full-batch gradient per client; the server optimizer steps."""

    name: str = "fedsgd"
    weighted: bool = True


@attrs.frozen
class FedNovaConfig(AlgorithmBlock):
    """FedNova (Wang et al. 2020): deltas normalized by local steps; client optimizer must be plain SGD."""

    name: str = "fednova"
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class MimeLiteConfig(AlgorithmBlock):
    """MimeLite (Karimireddy et al. 2021): clients mimic the client optimizer with the server's state."""

    name: str = "mime_lite"
    weighted: bool = True
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class QfflConfig(AlgorithmBlock):
    """q-FedAvg (Li et al. 2020): fair resource allocation; client optimizer must be plain SGD."""

    name: str = "qffl"
    q: float = attrs.field(default=1.0, validator=non_negative)
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class ScaffoldConfig(AlgorithmBlock):
    """SCAFFOLD option II (Karimireddy et al. 2020); client optimizer must be plain SGD.

    Client control variates persist in the run directory (``client_state/``),
    versioned by round, so a resumed run continues exactly. The server optimizer
    block applies the mean delta (SGD(1.0) is the paper).
    """

    name: str = "scaffold"
    weighted: bool = False
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class ScaffoldOptionIConfig(AlgorithmBlock):
    """SCAFFOLD option I (``c_i+`` = the client's full-batch gradient at the server model)."""

    name: str = "scaffold_option_i"
    weighted: bool = False
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class FedDynConfig(AlgorithmBlock):
    """FedDyn (Acar et al. 2021): dynamic regularization ``alpha``; client optimizer must be plain SGD."""

    name: str = "feddyn"
    alpha: float = attrs.field(default=0.01, validator=positive)
    weighted: bool = False
    local_epochs: int = attrs.field(default=1, validator=positive)
    batch_size: int = attrs.field(default=10, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen
class QFedSgdConfig(AlgorithmBlock):
    """q-FedSGD (Li et al. 2020): one full-batch gradient per client; ``L`` = 1 / client learning rate."""

    name: str = "q_fedsgd"
    q: float = attrs.field(default=1.0, validator=non_negative)


AlgorithmBlock.registry = {
    "fedavg": FedAvgConfig,
    "fedprox": FedProxConfig,
    "fedsgd": FedSgdConfig,
    "fednova": FedNovaConfig,
    "mime_lite": MimeLiteConfig,
    "qffl": QfflConfig,
    "scaffold": ScaffoldConfig,
    "scaffold_option_i": ScaffoldOptionIConfig,
    "feddyn": FedDynConfig,
    "q_fedsgd": QFedSgdConfig,
}
