"""Config schema: each block of an experiment, chosen by ``name`` with its parameters.

Every block kind (data, model, algorithm, optimizer, sampler, executor) has a
small registry from name to a frozen attrs class. Validation happens when the
class is built, so a config that loads is a config that runs.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import attrs
from attrs import validators as v


def _positive(instance, attribute, value):
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance, attribute, value):
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _fraction(instance, attribute, value):
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


class Block:
    """Base of every named block; subclasses set ``name`` and are attrs classes.

    ``default_name`` is used when a table leaves out ``name`` (None: required).
    """

    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = None


# Data ---------------------------------------------------------------------
class DataBlock(Block):
    registry: ClassVar[dict[str, type]] = {}


@attrs.frozen
class SyntheticData(DataBlock):
    """FedProx's Synthetic(alpha, beta), generated in memory."""

    name: str = "synthetic"
    alpha: float = attrs.field(default=1.0, validator=_non_negative)
    beta: float = attrs.field(default=1.0, validator=_non_negative)
    iid: bool = False
    num_devices: int = attrs.field(default=30, validator=_positive)
    test_fraction: float = attrs.field(default=0.1, validator=_fraction)
    seed: Optional[int] = None  # None: the run's seed


DataBlock.registry = {"synthetic": SyntheticData}


# Models -------------------------------------------------------------------
class ModelBlock(Block):
    registry: ClassVar[dict[str, type]] = {}


@attrs.frozen
class LogisticRegression(ModelBlock):
    """Multinomial logistic regression: one dense layer to the classes."""

    name: str = "logreg"


@attrs.frozen
class MultiLayerPerceptron(ModelBlock):
    """Dense ReLU layers, then a dense layer to the classes."""

    name: str = "mlp"
    hidden: list[int] = attrs.field(factory=lambda: [200, 200])

    @hidden.validator
    def _check_hidden(self, attribute, value):
        if not value or any(h <= 0 for h in value):
            raise ValueError(f"hidden must be a non-empty list of positive layer sizes, got {value!r}")


ModelBlock.registry = {"logreg": LogisticRegression, "mlp": MultiLayerPerceptron}


# Algorithms ---------------------------------------------------------------
class AlgorithmBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "fedavg"


@attrs.frozen
class FedAvgConfig(AlgorithmBlock):
    """Federated Averaging (McMahan et al. 2017)."""

    name: str = "fedavg"
    weighted: bool = True
    local_epochs: int = attrs.field(default=1, validator=_positive)
    batch_size: int = attrs.field(default=10, validator=_positive)


AlgorithmBlock.registry = {"fedavg": FedAvgConfig}


# Optimizers ---------------------------------------------------------------
class OptimizerBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "sgd"


@attrs.frozen
class SgdConfig(OptimizerBlock):
    """SGD with optional (Nesterov) momentum."""

    name: str = "sgd"
    learning_rate: float = attrs.field(default=0.01, validator=_positive)
    momentum: float = attrs.field(default=0.0, validator=_fraction)
    nesterov: bool = False


OptimizerBlock.registry = {"sgd": SgdConfig}


# Sampling, evaluation, execution -------------------------------------------
class SamplerBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "uniform"


@attrs.frozen
class UniformSamplerConfig(SamplerBlock):
    """``cohort_size`` distinct clients per round, uniformly at random."""

    name: str = "uniform"
    cohort_size: int = attrs.field(default=10, validator=_positive)


SamplerBlock.registry = {"uniform": UniformSamplerConfig}


class ExecutorBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "sequential"


@attrs.frozen
class SequentialExecutorConfig(ExecutorBlock):
    """Clients one after another in this process."""

    name: str = "sequential"


ExecutorBlock.registry = {"sequential": SequentialExecutorConfig}


@attrs.frozen
class EvaluationConfig:
    """Evaluate on the held-out clients every ``every`` rounds and after the last (0: never)."""

    every: int = attrs.field(default=10, validator=_non_negative)


@attrs.frozen
class RunConfig:
    """A whole experiment."""

    rounds: int = attrs.field(validator=_positive)
    data: DataBlock
    model: ModelBlock
    seed: int = 0
    algorithm: AlgorithmBlock = attrs.field(factory=FedAvgConfig)
    client_optimizer: OptimizerBlock = attrs.field(factory=SgdConfig)
    server_optimizer: OptimizerBlock = attrs.field(factory=lambda: SgdConfig(learning_rate=1.0))
    sampler: SamplerBlock = attrs.field(factory=UniformSamplerConfig)
    evaluation: EvaluationConfig = attrs.field(factory=EvaluationConfig)
    executor: ExecutorBlock = attrs.field(factory=SequentialExecutorConfig)


BLOCK_KINDS = (DataBlock, ModelBlock, AlgorithmBlock, OptimizerBlock, SamplerBlock, ExecutorBlock)
