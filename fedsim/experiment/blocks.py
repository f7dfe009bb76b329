"""Config schema: each block of an experiment, chosen by ``name`` with its parameters.

Blocks that are configuration only (data, partitioner, model, sampler,
executor) have a small registry from name to a frozen attrs class here.
Optimizers load straight into the library's classes (``fedsim.optimizers.OPTIMIZERS``)
and the algorithm into its factory's keyword arguments
(``fedsim.algorithms.ALGORITHMS``), so no signature or default is copied.
Validation happens when the config is built, so a config that loads is a config that runs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Optional, Protocol

import attrs

from fedsim.aggregators import build_aggregator
from fedsim.aggregators.validation import AggregatorConfigError
from fedsim.experiment.algorithm_blocks import AlgorithmChoice, ClientConfig
from fedsim.algorithms.registry import takes
from fedsim.optimizers import SGD
from fedsim.experiment.block import Block
from fedsim.experiment.data_blocks import DataBlock, PartitionerBlock, SyntheticData  # noqa: F401 (re-exported)
from fedsim.learning.non_trainable import NON_TRAINABLE_RULES
from fedsim.simulation import sampling
from fedsim.experiment.validators import FieldError, import_path, non_negative, positive, positive_list, probability


# Models -------------------------------------------------------------------
def _from_folder(path: Optional[str], folder: Path) -> Optional[str]:
    """``path`` read from ``folder`` unless it is absolute; None stays None.

    Pure path arithmetic, no file system call: a config loads whatever its
    paths hold, and the build names a file that is not there.
    """
    if path is None or Path(path).is_absolute():
        return path
    return str(folder / path)


def _optional_positive_list(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None:
        positive_list(instance, attribute, value)


@attrs.frozen
class ModelBlock(Block):
    """A model, with what every model takes.

    ``initial_weights``: a ``.npz`` of the model weights round 1 starts from
    (``fedsim.experiment.build_model.read_initial_weights`` says the format);
    a relative path is read from the config file's folder.
    """

    registry: ClassVar[dict[str, type]] = {}
    initial_weights: Optional[str] = attrs.field(default=None, kw_only=True)

    def relative_to(self, folder: Path) -> "ModelBlock":
        """This block with its relative paths read from ``folder`` (the config file's), made absolute."""
        return attrs.evolve(self, initial_weights=_from_folder(self.initial_weights, folder))


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
    """The CNN of McMahan et al. 2017 (two 5x5 conv + max-pool blocks, dense 512) for images.

    ``input_shape`` ``[height, width, channels]`` of one image; unset, it is
    the data's own when each example is an image (``[H, W, C]``, or ``[H, W]``
    read as one channel), and ``[s, s, 1]`` for a flat vector of ``s * s``
    values (LEAF's 784 floats -> 28x28x1). Flat data stays flat: a Reshape
    layer inside the model makes the images.
    """

    name: str = "cnn"
    input_shape: Optional[list[int]] = attrs.field(default=None, validator=_optional_positive_list)


@attrs.frozen
class CharLstm(ModelBlock):
    """The Shakespeare next-character model: embedding, two LSTMs, logits per step."""

    name: str = "char_lstm"
    embedding_dim: int = attrs.field(default=8, validator=positive)
    units: int = attrs.field(default=256, validator=positive)


def _finite_numbers(path: str, value: Any) -> None:
    """NaN or Inf in a custom model's params is refused: no model size or rate is meant to be one."""
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldError(path, f"must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite_numbers(f"{path}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite_numbers(f"{path}[{index}]", item)


@attrs.frozen
class CustomModel(ModelBlock):
    """Your own model: ``function(**params)`` returns a fedsim model or ``(keras_model, loss)``.

    The module of ``function`` (``module:function``) is looked up in
    ``module_dir``, then the working directory, then ``sys.path``. Unset,
    ``module_dir`` is the config file's folder (``load_config`` writes it in,
    so the run directory's config finds the module again on resume).
    """

    name: str = "custom"
    function: str = attrs.field(kw_only=True, validator=import_path)
    params: dict[str, Any] = attrs.field(factory=dict, validator=lambda i, a, v: _finite_numbers(a.name, v))
    module_dir: Optional[str] = None

    def relative_to(self, folder: Path) -> "CustomModel":
        module_dir = _from_folder(self.module_dir, folder) if self.module_dir is not None else str(folder)
        # ModelBlock's method by name: attrs rebuilds slotted classes, so zero-argument super() is avoided.
        return attrs.evolve(ModelBlock.relative_to(self, folder), module_dir=module_dir)


ModelBlock.registry = {
    "logreg": LogisticRegression,
    "mlp": MultiLayerPerceptron,
    "cnn": FedAvgCnn,
    "char_lstm": CharLstm,
    "custom": CustomModel,
}


# Optimizers ---------------------------------------------------------------
class Optimizer(Protocol):
    """A functional optimizer of ``fedsim.optimizers``: a config table loads straight into one of
    ``fedsim.optimizers.OPTIMIZERS`` by its ``name`` (its learning rate may be a schedule table)."""

    def init(self, weights: Any) -> Any: ...

    def next(self, state: Any, weights: Any, gradient: Any) -> Any: ...


# Sampling and execution -----------------------------------------------------
class SamplerBlock(Block):
    """Which clients take part in each round. ``build(seed, client_ids)`` makes the sampler;
    ``client_ids`` (the train population's, in order) is for samplers that name clients."""

    registry: ClassVar[dict[str, type]] = {}
    default_name: ClassVar[Optional[str]] = "uniform"

    def relative_to(self, folder: Path) -> "SamplerBlock":
        """This block with its relative paths read from ``folder`` (the config file's), made absolute."""
        return self


@attrs.frozen
class UniformSamplerConfig(SamplerBlock):
    """``cohort_size`` distinct clients per round, uniformly at random (fixed-size cohorts)."""

    name: str = "uniform"
    cohort_size: int = attrs.field(default=10, validator=positive)

    def build(self, seed: int, client_ids: Any = None) -> Any:
        return sampling.UniformSampler(self.cohort_size, seed=seed)


@attrs.frozen
class PoissonSamplerConfig(SamplerBlock):
    """Each client independently with probability ``rate`` per round (cohorts of varying size)."""

    name: str = "poisson"
    rate: float = attrs.field(default=0.1, validator=probability)

    def build(self, seed: int, client_ids: Any = None) -> Any:
        return sampling.PoissonSampler(self.rate, seed=seed)


@attrs.frozen
class RoundRobinSamplerConfig(SamplerBlock):
    """``cohort_size`` clients per round walking one fixed order (a seeded permutation, or population order)."""

    name: str = "round_robin"
    cohort_size: int = attrs.field(default=10, validator=positive)
    shuffle: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def build(self, seed: int, client_ids: Any = None) -> Any:
        return sampling.RoundRobinSampler(self.cohort_size, seed=seed, shuffle=self.shuffle)


@attrs.frozen
class ScheduleSamplerConfig(SamplerBlock):
    """Round ``r``'s cohort is the ``r``-th entry of the file at ``path`` (a fixed protocol, no draws).

    ``.json``: a list with one list of client ids per round (ids as the
    population names them; a number n means the id ``"n"``); ``.npy``: a 2-D
    integer array, one row of population positions per round. A relative
    ``path`` is read from the config file's folder. See ``fedsim.simulation.sampling.ScheduleSampler``.
    """

    name: str = "schedule"
    path: str = attrs.field(kw_only=True)

    def relative_to(self, folder: Path) -> "ScheduleSamplerConfig":
        return attrs.evolve(self, path=_from_folder(self.path, folder))

    def build(self, seed: int, client_ids: Any = None) -> Any:
        if client_ids is None:
            raise TypeError("the schedule sampler maps client ids to positions: build(seed, client_ids)")
        return sampling.ScheduleSampler.from_file(self.path, client_ids)


SamplerBlock.registry = {
    "uniform": UniformSamplerConfig, "poisson": PoissonSamplerConfig, "round_robin": RoundRobinSamplerConfig,
    "schedule": ScheduleSamplerConfig,
}


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
    a client whose actor died runs again elsewhere, up to ``faults.client_retries`` times."""

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


def _one_of(*allowed: str):
    def check(instance: Any, attribute: Any, value: str) -> None:
        if value not in allowed:
            raise FieldError(attribute.name, f"{value!r} is not one of {list(allowed)}")

    return check


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
