"""The federated round, as a process: ``initialize() -> state``, ``next(state, data) -> result``.

One round: every client of the cohort trains from the server's model weights
(the executor), the aggregator combines their deltas, the server optimizer
applies the aggregate, and the cohort's metrics are summed then finalized.
Algorithms are builders that choose the blocks; this is the only code that
runs a round.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional, Sequence, Union

import attrs
import numpy as np
import tensorflow as tf

from fedsim.aggregators import Aggregator
from fedsim.aggregators.base import AggregationOutput
from fedsim.learning.faults import FaultPolicy, train_isolating_failures, zero_nonfinite_updates
from fedsim.learning.validation import check_element_spec
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
    # What an algorithm carries beyond model and optimizer (SCAFFOLD's server
    # control variate): a nest of arrays, None for FedAvg and its kin.
    algorithm_state: Any = None


@attrs.frozen
class RoundResult:
    """A round's outcome: the new state, finalized train metrics, aggregator measurements."""

    state: ServerState
    metrics: "collections.OrderedDict[str, Any]"
    measurements: dict[str, float]
    num_clients: int
    num_examples: int


DatasetPrep = Callable[[tf.data.Dataset], tf.data.Dataset]
ClientId = Union[str, int]
# (dataset, round_num, client id) -> (the dataset to train on, how many passes over the
# client's data it makes), or None: the client does not report.
ClientPrep = Callable[[tf.data.Dataset, int, ClientId], Optional[tuple[tf.data.Dataset, int]]]


@attrs.frozen
class Cohort:
    """The clients that train in a round, after per-client preparation and dropouts.

    ``client_ids`` are the ids given to ``next`` or, without them, cohort positions
    (``0 .. n-1``); ``ids_given`` says which, since only real ids are stable across rounds.
    """

    client_ids: list[ClientId]
    datasets: list[tf.data.Dataset]
    ids_given: bool
    passes: Optional[list[int]] = None  # per client, when ``prepare_client`` varies them


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
      prepare_client: per-client training preparation from ``(dataset, round_num, client_id)``,
        used instead of ``prepare_train`` (stragglers, dropouts); returning None drops the
        client from the round.
      faults: what to do with clients whose work raises and with non-finite updates
        (default: retry once then drop, zero non-finite updates; both counted).

    Algorithms that need more than the mean delta (SCAFFOLD, FedNova, ...) subclass
    and override ``next``, reusing ``prepare_cohort``, ``aggregate`` and ``finish_round``.
    """

    def __init__(
        self,
        model: Any,
        executor: Any,
        aggregator: Aggregator,
        server_optimizer: Any,
        prepare_train: Optional[DatasetPrep] = None,
        prepare_eval: Optional[DatasetPrep] = None,
        prepare_client: Optional[ClientPrep] = None,
        faults: Optional[FaultPolicy] = None,
    ):
        self.model = model
        self.faults = faults if faults is not None else FaultPolicy()
        self.executor = executor
        self.aggregator = aggregator
        self.server_optimizer = server_optimizer
        self.prepare_train = prepare_train or _unchanged
        self.prepare_eval = prepare_eval or _unchanged
        self.prepare_client = prepare_client
        self._aggregate_metrics = metrics_aggregator_for(model)

    def initialize(self, model_weights: Optional[ModelWeights] = None) -> ServerState:
        """The state before round 1: the model's current weights unless given."""
        weights = (
            model_weights if model_weights is not None else ModelWeights.from_model(self.model)
        )
        return ServerState(
            round_num=0,
            model_weights=weights,
            optimizer_state=self.server_optimizer.init(list(weights.trainable)),
            aggregator_state=self.aggregator.initialize(),
        )

    def next(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> RoundResult:
        """Runs one round over the cohort's datasets and returns the new state and metrics.

        ``client_ids`` (one stable id per dataset) key per-client randomness and
        state; without them, cohort positions stand in.
        """
        cohort = self.prepare_cohort(state, client_datasets, client_ids)
        if not cohort.datasets:
            return self.empty_round(state)
        outputs, cohort, fault_measurements = self.train_cohort(state, cohort)
        aggregate = self.aggregate(
            state, [o.delta for o in outputs], self.update_weights(outputs, cohort), cohort
        )
        aggregate = attrs.evolve(aggregate, measurements={**aggregate.measurements, **fault_measurements})
        return self.finish_round(state, outputs, aggregate.result, aggregate)

    def train_cohort(self, state: ServerState, cohort: Cohort) -> tuple[list[Any], Cohort, dict[str, float]]:
        """The executor's outputs under the fault policy, the cohort of clients that reported, measurements.

        Clients whose work keeps raising are dropped (or stop the run) and
        non-finite deltas are zeroed (or stop the run), per ``self.faults``.
        """
        if hasattr(self.executor, "last_round_stats"):
            outputs, kept, measurements = self._train_on_fault_handling_executor(state, cohort)
        else:
            outputs, kept, measurements = train_isolating_failures(
                self.executor, state.model_weights, cohort.datasets, cohort.client_ids, self.faults
            )
        if len(kept) < len(cohort.datasets):
            cohort = attrs.evolve(
                cohort,
                client_ids=[cohort.client_ids[i] for i in kept],
                datasets=[cohort.datasets[i] for i in kept],
                passes=None if cohort.passes is None else [cohort.passes[i] for i in kept],
            )
        outputs, nonfinite = zero_nonfinite_updates(outputs, cohort.client_ids, self.faults)
        return outputs, cohort, {**measurements, **nonfinite}

    # Building blocks for algorithms that override ``next`` ------------------
    def _train_on_fault_handling_executor(self, state: ServerState, cohort: Cohort):
        """An executor that retries and drops clients itself (Ray) reports whom it dropped."""
        outputs = self.executor.train(state.model_weights, cohort.datasets, client_ids=cohort.client_ids)
        stats = self.executor.last_round_stats
        dropped = set(stats.dropped_client_ids)
        kept = [i for i, client_id in enumerate(cohort.client_ids) if client_id not in dropped]
        return outputs, kept, stats.measurements()

    def prepare_cohort(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> Cohort:
        """Validates a round's input and prepares each client's dataset (dropping non-reporters)."""
        if not isinstance(state, ServerState):
            raise ProcessError(
                f"state must be a ServerState from initialize(), got {type(state).__name__}"
            )
        if len(client_datasets) == 0:
            raise ProcessError("a round needs at least one client dataset; the cohort is empty")
        ids_given = client_ids is not None
        ids = list(client_ids) if ids_given else list(range(len(client_datasets)))
        if len(ids) != len(client_datasets):
            raise ProcessError(
                f"got {len(client_datasets)} client datasets but {len(ids)} client ids; "
                "pass one id per dataset, in the same order"
            )
        if self.prepare_client is None:
            cohort = Cohort(ids, [self._prepared_for_training(d) for d in client_datasets], ids_given)
        else:
            round_num = state.round_num + 1
            kept_ids, kept, passes = [], [], []
            for client_id, dataset in zip(ids, client_datasets):
                prepared = self.prepare_client(dataset, round_num, client_id)
                if prepared is not None:
                    kept_ids.append(client_id)
                    kept.append(prepared[0])
                    passes.append(prepared[1])
            cohort = Cohort(kept_ids, kept, ids_given, passes)
        for client_id, dataset in zip(cohort.client_ids, cohort.datasets):
            check_element_spec(client_id, dataset.element_spec, self.model.input_spec)
        return cohort

    def _prepared_for_training(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        # Preparing (batching) costs about a millisecond of eager work per client
        # and round. The result is kept on the dataset object itself, so a
        # population that hands out the same dataset every round (e.g. from
        # tensor slices) prepares each client once, and the prepared dataset
        # lives exactly as long as its source (no cache to bound or leak).
        memo = getattr(dataset, "_fedsim_prepared", None)
        if memo is not None and memo[0] is self.prepare_train:
            return memo[1]
        prepared = self.prepare_train(dataset)
        # object.__setattr__: tf.data's trackable __setattr__ would track it as a dependency.
        object.__setattr__(dataset, "_fedsim_prepared", (self.prepare_train, prepared))
        return prepared

    @staticmethod
    def update_weights(outputs: Sequence[Any], cohort: Cohort) -> list[float]:
        """Each client's update weight, counting its data once however many passes it made.

        Client work counts the examples it processed, so a straggler that ran 2 of
        20 epochs would weigh 10 times less than its data; the papers weight by data
        size. An example-count weight equals ``num_examples`` (an unweighted one is
        0 or 1, which never equals the count of two or more passes), so only those
        are divided by the passes.
        """
        if cohort.passes is None:
            return [o.update_weight for o in outputs]
        return [
            (
                o.update_weight / p
                if p > 1 and o.update_weight == float(o.num_examples)
                else o.update_weight
            )
            for o, p in zip(outputs, cohort.passes)
        ]

    def aggregate(
        self,
        state: ServerState,
        values: Sequence[list],
        update_weights: Sequence[float],
        cohort: Cohort,
    ) -> AggregationOutput:
        """The aggregator over per-client values (deltas, usually), given real ids when known."""
        kwargs = {"client_ids": cohort.client_ids} if cohort.ids_given else {}
        return self.aggregator.next(
            state.aggregator_state,
            list(values),
            np.array(update_weights, dtype=np.float64),
            **kwargs,
        )

    def finish_round(
        self,
        state: ServerState,
        outputs: Sequence[Any],
        update: Sequence[np.ndarray],
        aggregate: AggregationOutput,
        algorithm_state: Any = None,
    ) -> RoundResult:
        """Applies ``update`` (a delta: new weights minus old) with the server optimizer; builds the result."""
        trainable = list(state.model_weights.trainable)
        # The server treats the negated average delta as a gradient, so
        # SGD(learning_rate=1.0) gives plain FedAvg: w + mean(delta).
        pseudo_gradient = [-np.asarray(d, dtype=w.dtype) for d, w in zip(update, trainable)]
        optimizer_state, new_trainable = self.server_optimizer.next(
            state.optimizer_state, trainable, pseudo_gradient
        )
        new_state = ServerState(
            round_num=state.round_num + 1,
            model_weights=state.model_weights.with_trainable(new_trainable),
            optimizer_state=optimizer_state,
            aggregator_state=aggregate.state,
            algorithm_state=algorithm_state,
        )
        return self.round_result(new_state, outputs, aggregate.measurements)

    def round_result(
        self, new_state: ServerState, outputs: Sequence[Any], measurements: dict
    ) -> RoundResult:
        """The round's result: cohort metrics summed then finalized."""
        return RoundResult(
            state=new_state,
            metrics=self._aggregate_metrics([o.metrics for o in outputs]),
            measurements=dict(measurements),
            num_clients=len(outputs),
            num_examples=sum(o.num_examples for o in outputs),
        )

    def empty_round(self, state: ServerState) -> RoundResult:
        """A round in which no client reported: the model and every state stay as they were."""
        return RoundResult(
            state=attrs.evolve(state, round_num=state.round_num + 1),
            metrics=collections.OrderedDict(),
            measurements={},
            num_clients=0,
            num_examples=0,
        )

    def evaluate(self, model_weights: ModelWeights, client_datasets: Sequence[tf.data.Dataset]):
        """Sum-then-finalize metrics of ``model_weights`` over the given (prepared) datasets."""
        datasets = [self.prepare_eval(d) for d in client_datasets]
        return self._aggregate_metrics(self.executor.evaluate(model_weights, datasets))
