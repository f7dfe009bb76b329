"""Config schema: each block of an experiment, chosen by ``name`` with its parameters.

Every block kind (data, partitioner, model, algorithm, optimizer, sampler,
executor) has a small registry from name to a frozen attrs class. Validation
happens when the class is built, so a config that loads is a config that runs.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import attrs

from fedsim.aggregators import build_aggregator
from fedsim.aggregators.validation import AggregatorConfigError
from fedsim.experiment.algorithm_blocks import AlgorithmBlock, FedAvgConfig  # noqa: F401 (re-exported)
from fedsim.experiment.block import Block
from fedsim.experiment.data_blocks import DataBlock, PartitionerBlock, SyntheticData  # noqa: F401 (re-exported)
from fedsim.experiment.validators import FieldError, fraction, import_path, non_negative, positive, positive_list


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
    hidden: list[int] = attrs.field(factory=lambda: [200, 200], validator=positive_list)


@attrs.frozen
class FedAvgCnn(ModelBlock):
    """The CNN of McMahan et al. 2017 (two 5x5 conv + max-pool blocks, dense 512) for images."""

    name: str = "cnn"


@attrs.frozen
class CharLstm(ModelBlock):
    """The Shakespeare next-character model: embedding, two LSTMs, logits per step."""

    name: str = "char_lstm"
    embedding_dim: int = attrs.field(default=8, validator=positive)
    units: int = attrs.field(default=256, validator=positive)


@attrs.frozen
class CustomModel(ModelBlock):
    """Your own model: ``function(**params)`` returns a fedsim model or ``(keras_model, loss)``."""

    name: str = "custom"
    function: str = attrs.field(kw_only=True, validator=import_path)
    params: dict[str, Any] = attrs.field(factory=dict)


ModelBlock.registry = {
    "logreg": LogisticRegression,
    "mlp": MultiLayerPerceptron,
    "cnn": FedAvgCnn,
    "char_lstm": CharLstm,
    "custom": CustomModel,
}


# Optimizers ---------------------------------------------------------------
class OptimizerBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "sgd"


@attrs.frozen
class SgdConfig(OptimizerBlock):
    """SGD with optional (Nesterov) momentum."""

    name: str = "sgd"
    learning_rate: float = attrs.field(default=0.01, validator=positive)
    momentum: float = attrs.field(default=0.0, validator=fraction)
    nesterov: bool = False


def _beta(default: float):
    return attrs.field(default=default, validator=fraction)


@attrs.frozen
class AdamConfig(OptimizerBlock):
    """Adam (Kingma and Ba 2015); FedAdam as a server optimizer (Reddi et al. 2021)."""

    name: str = "adam"
    learning_rate: float = attrs.field(default=0.001, validator=positive)
    beta_1: float = _beta(0.9)
    beta_2: float = _beta(0.999)
    epsilon: float = attrs.field(default=1e-7, validator=non_negative)
    initial_accumulator: float = attrs.field(default=0.0, validator=non_negative)
    bias_correction: bool = True


@attrs.frozen
class YogiConfig(OptimizerBlock):
    """Yogi (Zaheer et al. 2018); FedYogi as a server optimizer."""

    name: str = "yogi"
    learning_rate: float = attrs.field(default=0.01, validator=positive)
    beta_1: float = _beta(0.9)
    beta_2: float = _beta(0.999)
    epsilon: float = attrs.field(default=1e-3, validator=non_negative)
    initial_accumulator: float = attrs.field(default=1e-6, validator=non_negative)
    bias_correction: bool = True


@attrs.frozen
class AdagradConfig(OptimizerBlock):
    """Adagrad (Duchi et al. 2011), optional ``beta_1`` momentum; FedAdagrad as a server optimizer."""

    name: str = "adagrad"
    learning_rate: float = attrs.field(default=0.01, validator=positive)
    beta_1: float = _beta(0.0)
    epsilon: float = attrs.field(default=1e-7, validator=non_negative)
    initial_accumulator: float = attrs.field(default=0.1, validator=non_negative)


OptimizerBlock.registry = {"sgd": SgdConfig, "adam": AdamConfig, "yogi": YogiConfig, "adagrad": AdagradConfig}


# Sampling and execution -----------------------------------------------------
class SamplerBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "uniform"


@attrs.frozen
class UniformSamplerConfig(SamplerBlock):
    """``cohort_size`` distinct clients per round, uniformly at random."""

    name: str = "uniform"
    cohort_size: int = attrs.field(default=10, validator=positive)


SamplerBlock.registry = {"uniform": UniformSamplerConfig}


class ExecutorBlock(Block):
    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "auto"


@attrs.frozen
class SequentialExecutorConfig(ExecutorBlock):
    """Clients one after another in this process."""

    name: str = "sequential"


@attrs.frozen
class VectorizedExecutorConfig(ExecutorBlock):
    """The whole cohort as one batched computation (same results; needs batchable client work)."""

    name: str = "vectorized"


@attrs.frozen
class AutoExecutorConfig(ExecutorBlock):
    """Vectorized when the client work allows it, else sequential (the reason is logged)."""

    name: str = "auto"


@attrs.frozen
class RayExecutorConfig(ExecutorBlock):
    """Client work in Ray actors (``pip install 'fedsim[ray]'``): a local instance, or the
    cluster at ``address``; ``num_actors`` defaults to one per CPU (or GPU) slot. Failing
    clients follow the ``[faults]`` block (retries, then drop or stop)."""

    name: str = "ray"
    address: Optional[str] = None
    num_actors: Optional[int] = attrs.field(default=None, validator=positive)


ExecutorBlock.registry = {
    "sequential": SequentialExecutorConfig,
    "vectorized": VectorizedExecutorConfig,
    "auto": AutoExecutorConfig,
    "ray": RayExecutorConfig,
}


# Run-level settings ---------------------------------------------------------
@attrs.frozen
class EvaluationConfig:
    """Evaluate on the held-out clients every ``every`` rounds and after the last (0: never)."""

    every: int = attrs.field(default=10, validator=non_negative)


@attrs.frozen
class CheckpointConfig:
    """Checkpoint every ``every`` rounds and after the last (0: never); keep the newest ``keep``."""

    every: int = attrs.field(default=10, validator=non_negative)
    keep: int = attrs.field(default=2, validator=positive)


def _one_of(*allowed: str):
    def check(instance: Any, attribute: Any, value: str) -> None:
        if value not in allowed:
            raise FieldError(attribute.name, f"{value!r} is not one of {list(allowed)}")

    return check


@attrs.frozen
class FaultsConfig:
    """Failing clients: retried ``client_retries`` times, then dropped (counted) or the run stops;
    non-finite updates: zeroed (counted) or the run stops."""

    client_retries: int = attrs.field(default=1, validator=non_negative)
    on_client_failure: str = attrs.field(default="drop", validator=_one_of("drop", "raise"))
    on_nonfinite_update: str = attrs.field(default="zero", validator=_one_of("zero", "raise"))


@attrs.frozen
class LoggingConfig:
    """What the run directory records besides ``metrics.jsonl``."""

    tensorboard: bool = True


def _aggregator_chain(instance: Any, attribute: Any, value: list[dict[str, Any]]) -> None:
    if value:
        try:
            build_aggregator(value)
        except (AggregatorConfigError, TypeError, ValueError) as error:
            raise FieldError(attribute.name, str(error)) from None


@attrs.frozen
class RunConfig:
    """A whole experiment. ``aggregator`` is a chain, outermost step first (empty: the algorithm's mean)."""

    rounds: int = attrs.field(validator=positive)
    data: DataBlock
    model: ModelBlock
    seed: int = attrs.field(default=0, validator=non_negative)
    algorithm: AlgorithmBlock = attrs.field(factory=FedAvgConfig)
    client_optimizer: OptimizerBlock = attrs.field(factory=SgdConfig)
    server_optimizer: OptimizerBlock = attrs.field(factory=lambda: SgdConfig(learning_rate=1.0))
    aggregator: list[dict[str, Any]] = attrs.field(factory=list, validator=_aggregator_chain)
    sampler: SamplerBlock = attrs.field(factory=UniformSamplerConfig)
    evaluation: EvaluationConfig = attrs.field(factory=EvaluationConfig)
    executor: ExecutorBlock = attrs.field(factory=AutoExecutorConfig)
    checkpoint: CheckpointConfig = attrs.field(factory=CheckpointConfig)
    faults: FaultsConfig = attrs.field(factory=FaultsConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)


BLOCK_KINDS = (DataBlock, PartitionerBlock, ModelBlock, AlgorithmBlock, OptimizerBlock, SamplerBlock, ExecutorBlock)
