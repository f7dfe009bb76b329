"""The federated round, as a process: ``initialize() -> state``, ``next(state, data) -> result``.

One round: every client of the cohort trains from the server's model weights
(the executor), the aggregator combines their deltas, the server optimizer
applies the aggregate, and the cohort's metrics are summed then finalized.
Algorithms are builders that choose the blocks; this is the only code that
runs a round.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf

from fedsim.aggregators import Aggregator
from fedsim.metrics import metrics_aggregator_for
from fedsim.models.model_weights import ModelWeights


class ProcessError(ValueError):
    """Raised for a malformed round input (no clients, wrong state, ...)."""


@attrs.frozen
class ServerState:
    """Everything the server carries from one round to the next."""

    round_num: int
    model_weights: ModelWeights
    optimizer_state: Any
    aggregator_state: Any


@attrs.frozen
class RoundResult:
    """A round's outcome: the new state, finalized train metrics, aggregator measurements."""

    state: ServerState
    metrics: "collections.OrderedDict[str, Any]"
    measurements: dict[str, float]
    num_clients: int
    num_examples: int


DatasetPrep = Callable[[tf.data.Dataset], tf.data.Dataset]


def _unchanged(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset


class FederatedProcess:
    """A federated training process built from swappable blocks.

    Args:
      model: the fedsim model the executor's client work trains (built once).
      executor: runs client work for a cohort (e.g. ``SequentialExecutor``).
      aggregator: combines client deltas (e.g. ``MeanAggregator``).
      server_optimizer: functional optimizer applied to the negated aggregate delta.
      prepare_train: per-client dataset preparation for training (batching, local epochs).
      prepare_eval: the same for evaluation (batching only).
    """

    def __init__(
        self,
        model: Any,
        executor: Any,
        aggregator: Aggregator,
        server_optimizer: Any,
        prepare_train: Optional[DatasetPrep] = None,
        prepare_eval: Optional[DatasetPrep] = None,
    ):
        self.model = model
        self.executor = executor
        self.aggregator = aggregator
        self.server_optimizer = server_optimizer
        self.prepare_train = prepare_train or _unchanged
        self.prepare_eval = prepare_eval or _unchanged
        self._aggregate_metrics = metrics_aggregator_for(model)

    def initialize(self, model_weights: Optional[ModelWeights] = None) -> ServerState:
        """The state before round 1: the model's current weights unless given."""
        weights = model_weights if model_weights is not None else ModelWeights.from_model(self.model)
        return ServerState(
            round_num=0,
            model_weights=weights,
            optimizer_state=self.server_optimizer.init(list(weights.trainable)),
            aggregator_state=self.aggregator.initialize(),
        )

    def next(self, state: ServerState, client_datasets: Sequence[tf.data.Dataset]) -> RoundResult:
        """Runs one round over the cohort's datasets and returns the new state and metrics."""
        if not isinstance(state, ServerState):
            raise ProcessError(f"state must be a ServerState from initialize(), got {type(state).__name__}")
        if len(client_datasets) == 0:
            raise ProcessError("a round needs at least one client dataset; the cohort is empty")
        datasets = [self.prepare_train(d) for d in client_datasets]
        outputs = self.executor.train(state.model_weights, datasets)
        aggregate = self.aggregator.next(
            state.aggregator_state,
            [o.delta for o in outputs],
            np.array([o.update_weight for o in outputs], dtype=np.float64),
        )
        trainable = list(state.model_weights.trainable)
        # The server treats the negated average delta as a gradient, so
        # SGD(learning_rate=1.0) gives plain FedAvg: w + mean(delta).
        pseudo_gradient = [-np.asarray(d, dtype=w.dtype) for d, w in zip(aggregate.result, trainable)]
        optimizer_state, new_trainable = self.server_optimizer.next(
            state.optimizer_state, trainable, pseudo_gradient
        )
        new_state = ServerState(
            round_num=state.round_num + 1,
            model_weights=state.model_weights.with_trainable(new_trainable),
            optimizer_state=optimizer_state,
            aggregator_state=aggregate.state,
        )
        return RoundResult(
            state=new_state,
            metrics=self._aggregate_metrics([o.metrics for o in outputs]),
            measurements=dict(aggregate.measurements),
            num_clients=len(outputs),
            num_examples=sum(o.num_examples for o in outputs),
        )

    def evaluate(self, model_weights: ModelWeights, client_datasets: Sequence[tf.data.Dataset]):
        """Sum-then-finalize metrics of ``model_weights`` over the given (prepared) datasets."""
        datasets = [self.prepare_eval(d) for d in client_datasets]
        return self._aggregate_metrics(self.executor.evaluate(model_weights, datasets))
