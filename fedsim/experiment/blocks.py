"""Config schema: each block of an experiment, chosen by ``name`` with its parameters.

Blocks that are configuration only (data, partitioner, model, sampler,
executor) have a small registry from name to a frozen attrs class; the data,
model and sampler blocks live in modules of their own that import no
TensorFlow (``data_blocks``, ``model_blocks``, ``sampler_blocks``), so a
config's files and sizes can be checked before TensorFlow starts.
Optimizers load straight into the library's classes (``fedsim.optimizers.OPTIMIZERS``)
and the algorithm into its factory's keyword arguments
(``fedsim.algorithms.ALGORITHMS``), so no signature or default is copied.
Validation happens when the config is built, so a config that loads is a config that runs.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional, Protocol

import attrs

from fedsim.aggregators import build_aggregator
from fedsim.aggregators.validation import AggregatorConfigError
from fedsim.experiment.algorithm_blocks import AlgorithmChoice, ClientConfig
from fedsim.algorithms.registry import takes
from fedsim.optimizers import SGD
from fedsim.experiment.block import Block
from fedsim.experiment.data_blocks import DataBlock, PartitionerBlock, SyntheticData  # noqa: F401 (re-exported)
from fedsim.experiment.model_blocks import (  # noqa: F401 (re-exported)
    CharLstm, CustomModel, FedAvgCnn, LogisticRegression, ModelBlock, MultiLayerPerceptron,
)
from fedsim.experiment.sampler_blocks import (  # noqa: F401 (re-exported)
    PoissonSamplerConfig, RoundRobinSamplerConfig, SamplerBlock, ScheduleSamplerConfig, UniformSamplerConfig,
)
from fedsim.learning.non_trainable import NON_TRAINABLE_RULES
from fedsim.experiment.validators import FieldError, non_negative, positive
from fedsim.execution.ray_executor import ACTOR_EXECUTORS, CLIENT_DATA


# Optimizers ---------------------------------------------------------------
class Optimizer(Protocol):
    """A functional optimizer of ``fedsim.optimizers``: a config table loads straight into one of
    ``fedsim.optimizers.OPTIMIZERS`` by its ``name`` (its learning rate may be a schedule table)."""

    def init(self, weights: Any) -> Any: ...

    def next(self, state: Any, weights: Any, gradient: Any) -> Any: ...


# Execution -------------------------------------------------------------------
def _one_of(*allowed: str):
    def check(instance: Any, attribute: Any, value: str) -> None:
        if value not in allowed:
            raise FieldError(attribute.name, f"{value!r} is not one of {list(allowed)}")

    return check


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
    clients follow the ``[faults]`` block (retries, then drop; or stop at the first failure);
    a client whose actor died runs again elsewhere, up to ``faults.client_retries`` times.
    ``client_data``: where training clients' datasets are built: ``"actors"`` (each actor
    builds its clients from the population's source, the driver sends ids and weights),
    ``"driver"`` (the driver ships every client's data), ``"auto"`` (actors when they can).
    ``actor_executor``: how an actor trains: ``"vectorized"`` (its share of the cohort in
    one compiled call), ``"sequential"`` (one client per task), ``"auto"`` (vectorized when
    the model allows)."""

    name: str = "ray"
    address: Optional[str] = None
    num_actors: Optional[int] = attrs.field(default=None, validator=positive)
    client_data: str = attrs.field(default="auto", validator=_one_of(*CLIENT_DATA))
    actor_executor: str = attrs.field(default="auto", validator=_one_of(*ACTOR_EXECUTORS))


ExecutorBlock.registry = {
    "sequential": SequentialExecutorConfig,
    "vectorized": VectorizedExecutorConfig,
    "auto": AutoExecutorConfig,
    "ray": RayExecutorConfig,
}


# Run-level settings ---------------------------------------------------------
@attrs.frozen
class EvaluationConfig:
    """Evaluate on the held-out clients every ``every`` rounds and after the last (0: never).

    ``clients``: evaluate a fixed sample of this many test clients (drawn once from the
    run's seed), for test populations too large to evaluate in full; unset: every client.
    """

    every: int = attrs.field(default=10, validator=non_negative)
    clients: Optional[int] = attrs.field(default=None, validator=positive)


@attrs.frozen
class CheckpointConfig:
    """Checkpoint every ``every`` rounds and after the last (0: never); keep the newest ``keep``."""

    every: int = attrs.field(default=10, validator=non_negative)
    keep: int = attrs.field(default=2, validator=positive)



@attrs.frozen
class FaultsConfig:
    """Failing clients: ``on_client_failure = "drop"`` retries one ``client_retries`` times,
    then drops it (counted; a round where every client fails stops the run), ``"raise"``
    stops the run at the first failure, without retries, naming the client and its error;
    non-finite updates: zeroed (counted) or the run stops. A failed client never counts
    as a success."""

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
    # What becomes of clients' non-trainable weights (BatchNorm statistics): fedsim.learning.non_trainable.
    non_trainable: str = attrs.field(default="keep", validator=_one_of(*NON_TRAINABLE_RULES))
    algorithm: AlgorithmChoice = attrs.field(factory=AlgorithmChoice)
    client: ClientConfig = attrs.field(factory=ClientConfig)
    client_optimizer: Optional[Optimizer] = None
    server_optimizer: Optimizer = attrs.field(factory=lambda: SGD(1.0))
    aggregator: list[dict[str, Any]] = attrs.field(factory=list, validator=_aggregator_chain)
    sampler: SamplerBlock = attrs.field(factory=UniformSamplerConfig)
    evaluation: EvaluationConfig = attrs.field(factory=EvaluationConfig)
    executor: ExecutorBlock = attrs.field(factory=AutoExecutorConfig)
    checkpoint: CheckpointConfig = attrs.field(factory=CheckpointConfig)
    faults: FaultsConfig = attrs.field(factory=FaultsConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)

    def __attrs_post_init__(self) -> None:
        # Before any data or TensorFlow: the algorithm must take the client blocks it is given.
        # The population is not known yet; any valid size stands in for it here.
        try:
            algorithm = self.algorithm_record(population_size=1)
        except ValueError as error:  # AlgorithmBuildError, or a factory's own check of a value
            raise FieldError("algorithm", str(error)) from None
        if algorithm.one_batch and self.client.local_epochs != 1:
            raise FieldError(
                "client.local_epochs", f"{self.algorithm.name} trains on one whole-dataset batch once per round; "
                f"remove local_epochs (got {self.client.local_epochs})"
            )

    def algorithm_record(self, population_size: int) -> Any:
        """The ``fedsim.learning.Algorithm`` this config runs, for a population of ``population_size``."""
        return self.algorithm.build(self.client_optimizer, self.client.weighted, population_size)

    def resolved(self) -> "RunConfig":
        """This config with the algorithm's own defaults written in (client optimizer, weighting)."""
        name, task = self.algorithm.name, self.algorithm_record(population_size=1).task
        client_optimizer, client = self.client_optimizer, self.client
        if client_optimizer is None and (takes(name, "client_optimizer") or takes(name, "client_learning_rate")):
            client_optimizer = task.optimizer
        if client.weighted is None and takes(name, "weighted"):
            client = attrs.evolve(client, weighted=task.weighted)
        return attrs.evolve(self, client_optimizer=client_optimizer, client=client)


BLOCK_KINDS = (DataBlock, PartitionerBlock, ModelBlock, SamplerBlock, ExecutorBlock)
