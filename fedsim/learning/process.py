"""The federated round, as a process: ``initialize() -> state``, ``next(state, data) -> result``.

One round, for every algorithm (``fedsim.learning.algorithm`` says what an
algorithm plugs in): the server broadcasts the model weights and what the
algorithm adds per client; the executor runs the client step on every client
of the cohort; the fault policy retries, drops and counts failing clients and
zeroes non-finite messages; every array of every client's message goes
through the aggregator chain; the algorithm turns the aggregate into a server
delta and its new state; the server optimizer applies the delta; the cohort's
metrics are summed then finalized. This is the only code that runs a round.
"""

from __future__ import annotations

import collections
import contextlib
import gc
from typing import Any, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf

from fedsim.aggregators import Aggregator
from fedsim.client.seeds import client_seed
from fedsim.client.task import ClientOutput
from fedsim.learning import cohort_prep
from fedsim.learning import non_trainable as nt_rule
from fedsim.learning.algorithm import Aggregate, Algorithm, ClientMessage
from fedsim.learning.client_state import InMemoryClientStore
from fedsim.learning.empty_round import stand_in_message, stand_in_values
from fedsim.learning.evaluation import evaluate_clients
from fedsim.learning.faults import FaultPolicy, run_clients, zero_nonfinite_messages
# The round's records live in round_records; they are imported from here too.
from fedsim.learning.round_records import (  # noqa: F401  (ClientPrep: re-exported)
    ClientId, ClientPrep, Cohort, DatasetPrep, ProcessError, RoundResult, ServerState)
from fedsim.metrics import metrics_aggregator_for
from fedsim.models.model_weights import ModelWeights
from fedsim.privacy import mechanism


def _unchanged(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset


class FederatedProcess:
    """A federated training process: the one round over an algorithm's blocks.

    Args:
      model: the fedsim model the executor's client work trains (built once).
      algorithm: what the algorithm plugs into the round (``Algorithm``).
      executor: runs the client step for a cohort (e.g. ``SequentialExecutor``).
      aggregator: combines every client's message (e.g. ``MeanAggregator``).
      server_optimizer: functional optimizer applied to the negated server delta.
      prepare_train: per-client dataset preparation for training (batching, local epochs).
      prepare_eval: the same for evaluation (batching only).
      prepare_client: per-client training preparation from ``(dataset, round_num, client_id)``,
        used instead of ``prepare_train`` (stragglers, dropouts); returning None drops the
        client from the round.
      faults: what to do with clients whose work raises and with non-finite messages
        (default: retry once then drop, zero non-finite messages; both counted).
      client_store: where per-client state lives between rounds (algorithms with
        ``client_state``; see ``fedsim.learning.client_state``).
      seed: the run's seed (an int >= 0); each client's random draws in a round
        (Dropout masks, noise layers) derive from (seed, round, client id)
        alone (``fedsim.client.seeds``), so they differ between clients and
        rounds and a rerun reproduces them.
      non_trainable: what becomes of the clients' non-trainable weights (BatchNorm
        statistics): ``"keep"`` the server's (default, TFF's behaviour),
        ``"average"`` them over the cohort like deltas, or keep them
        ``"per_client"`` (FedBN); see ``fedsim.learning.non_trainable``.
      non_trainable_store: where ``"per_client"`` keeps each client's values
        (default in memory; ``NpzClientStore(directory)`` for resumable runs).
    """

    def __init__(
        self,
        model: Any,
        algorithm: Algorithm,
        executor: Any,
        aggregator: Aggregator,
        server_optimizer: Any,
        prepare_train: Optional[DatasetPrep] = None,
        prepare_eval: Optional[DatasetPrep] = None,
        prepare_client: Optional[ClientPrep] = None,
        faults: Optional[FaultPolicy] = None,
        client_store: Any = None,
        seed: int = 0,
        non_trainable: str = "keep",
        non_trainable_store: Any = None,
    ):
        nt_rule.check_rule(non_trainable)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ProcessError(f"seed={seed!r} must be an int >= 0 (the run's seed)")
        if algorithm.client_state and client_store is None:
            raise ProcessError(f"algorithm {algorithm.name!r} keeps per-client state: pass a client_store")
        self.model = model
        self.algorithm = algorithm
        self.faults = faults if faults is not None else FaultPolicy()
        self.executor = executor
        self.aggregator = aggregator
        self.server_optimizer = server_optimizer
        self.prepare_train = prepare_train or _unchanged
        self.prepare_eval = prepare_eval or _unchanged
        self.prepare_client = prepare_client
        self.client_store = client_store
        self.seed = int(seed)
        self.non_trainable = non_trainable
        self.non_trainable_store = None
        if non_trainable == "per_client":
            self.non_trainable_store = non_trainable_store if non_trainable_store is not None else InMemoryClientStore()
        nt_rule.warn_if_statistics_are_kept(model, non_trainable)
        self._aggregate_metrics = metrics_aggregator_for(model)
        # Captured now: executors write the live variables while they train.
        self._initial_weights = ModelWeights.from_model(model)
        if mechanism.needs_value_size(aggregator):  # distributed DP is calibrated to what a client sends
            size = sum(np.size(a) for a in stand_in_values(algorithm, non_trainable, self.initialize()))
            self.aggregator = mechanism.bind_value_size(aggregator, size)

    def initialize(self, model_weights: Optional[ModelWeights] = None) -> ServerState:
        """The state before round 1: the model's weights when the process was built, unless given.

        Given weights are checked against the model (count and shapes:
        ``WeightsMismatchError``; NaN or Inf: ``ProcessError``) and cast to its dtypes.
        The result depends only on the arguments: calling it again gives the same state.
        """
        weights = self._initial_weights if model_weights is None else self._checked(model_weights)
        return ServerState(
            round_num=0,
            model_weights=weights,
            optimizer_state=self.server_optimizer.init(list(weights.trainable)),
            aggregator_state=self.aggregator.initialize(),
            algorithm_state=self.algorithm.init_state(weights),
        )

    def _checked(self, model_weights: ModelWeights) -> ModelWeights:
        if not isinstance(model_weights, ModelWeights):
            raise ProcessError(
                f"model_weights must be a ModelWeights, got {type(model_weights).__name__}; build one with "
                "ModelWeights(trainable, non_trainable) or ModelWeights.from_model(model)"
            )
        fitted = model_weights.fitted_to(self.model)
        for kind, arrays in (("trainable", fitted.trainable), ("non_trainable", fitted.non_trainable)):
            for index, array in enumerate(arrays):
                if not np.isfinite(array).all():
                    raise ProcessError(
                        f"initial model weights: {kind} array {index} (shape {array.shape}) holds NaN or Inf; "
                        "start from finite weights"
                    )
        return fitted

    def next(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> RoundResult:
        """Runs one round over the cohort's datasets and returns the new state and metrics.

        A client's "dataset" may also be a ``fedsim.data.sources.ClientRecipe``, for an
        executor that builds clients itself (Ray): it is prepared the same way.
        ``client_ids`` (one stable id per dataset) key per-client randomness and
        state; without them, cohort positions stand in (an algorithm that keeps
        per-client state refuses to run without them).
        """
        if self.algorithm.client_state and client_ids is None:
            raise ProcessError(
                f"{self.algorithm.name} keeps state per client: pass client_ids (one stable id per "
                "dataset) to next(), as simulate() does"
            )
        with _collection_paused():
            return self._round(state, client_datasets, client_ids)

    def _round(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]],
    ) -> RoundResult:
        cohort = self.prepare_cohort(state, client_datasets, client_ids)
        if not cohort.datasets:
            return self.empty_round(state)
        round_num = state.round_num + 1
        client_states = [self._client_state(c, round_num) for c in cohort.client_ids]
        inputs = [
            attrs.evolve(
                self.algorithm.broadcast(state, c),
                seed=client_seed(self.seed, round_num, client_id),
                non_trainable=self._own_non_trainable(client_id, round_num),
            )
            for c, client_id in zip(client_states, cohort.client_ids)
        ]
        outputs, kept, measurements = run_clients(
            self.executor, state.model_weights, cohort.datasets, inputs, cohort.client_ids, self.faults
        )
        cohort = cohort_prep.keep(cohort, kept)
        inputs, client_states = [inputs[i] for i in kept], [client_states[i] for i in kept]
        messages = [self.algorithm.message(o, i, c) for o, i, c in zip(outputs, inputs, client_states)]
        if self.non_trainable == "average":  # the change travels beside the delta, through the chain
            messages = nt_rule.with_changes(messages, outputs, state.model_weights.non_trainable)
        weights = cohort_prep.update_weights(outputs, cohort)
        outputs, messages, weights, nonfinite = zero_nonfinite_messages(
            outputs, messages, weights, cohort.client_ids, self.faults
        )
        aggregate, aggregator_state, aggregator_measurements = self._aggregate(state, messages, weights, cohort)
        non_trainable_change = aggregate.extras.pop(nt_rule.EXTRA, None)
        step = self.algorithm.server_update(state, aggregate)
        for client_id, message in zip(cohort.client_ids, messages):
            if message.client_state is not None:
                self.client_store.put(client_id, message.client_state, round_num)
        if self.non_trainable_store is not None:
            nt_rule.keep_own(self.non_trainable_store, cohort.client_ids, outputs, weights, round_num)
        result = self._apply(
            state, step, aggregator_state, outputs,
            {**aggregator_measurements, **step.measurements, **measurements, **nonfinite},
        )
        return _with_non_trainable_change(result, non_trainable_change)

    def _own_non_trainable(self, client_id: ClientId, round_num: int) -> Optional[list]:
        """Rule ``"per_client"``: the client's own non-trainable weights, once it has trained."""
        if self.non_trainable_store is None:
            return None
        return nt_rule.start_values(self.non_trainable_store, client_id, round_num)

    @property
    def client_stores(self) -> list:
        """Every per-client store the process writes (algorithm state, FedBN's weights), for pruning."""
        return [s for s in (self.client_store, self.non_trainable_store) if s is not None]

    def _client_state(self, client_id: ClientId, round_num: int) -> Optional[list]:
        if not self.algorithm.client_state:
            return None
        return self.client_store.get(client_id, before_round=round_num)

    def _aggregate(self, state: ServerState, messages: Sequence[ClientMessage], weights: Sequence[float], cohort: Cohort):
        """Every array of every message through the aggregator chain, as one value per client.

        The delta and the extras travel as one value, so a norm bound (clipping,
        DP) bounds everything a client sends, and the result is split back.
        """
        layout = [(name, len(arrays)) for name, arrays in messages[0].extras.items()]
        values = [list(m.delta) + [a for name, _ in layout for a in m.extras[name]] for m in messages]
        kwargs = {"client_ids": cohort.client_ids} if cohort.ids_given else {}
        output = self.aggregator.next(
            state.aggregator_state, values, np.array(weights, dtype=np.float64), **kwargs
        )
        result, start = list(output.result), len(messages[0].delta)
        extras = {}
        for name, count in layout:
            extras[name] = result[start:start + count]
            start += count
        aggregate = Aggregate(result[: len(messages[0].delta)], extras, int(np.sum(np.asarray(weights) > 0)))
        return aggregate, output.state, output.measurements

    def _apply(self, state: ServerState, step, aggregator_state: Any, outputs: Sequence[ClientOutput], measurements: dict) -> RoundResult:
        """The server optimizer applies the step's delta (new weights minus old); builds the result."""
        trainable = list(state.model_weights.trainable)
        # The server treats the negated delta as a gradient, so
        # SGD(learning_rate=1.0) gives plain FedAvg: w + mean(delta).
        pseudo_gradient = [-np.asarray(d, dtype=w.dtype) for d, w in zip(step.delta, trainable)]
        optimizer_state, new_trainable = self.server_optimizer.next(
            state.optimizer_state, trainable, pseudo_gradient
        )
        new_state = ServerState(
            round_num=state.round_num + 1,
            model_weights=state.model_weights.with_trainable(new_trainable),
            optimizer_state=optimizer_state,
            aggregator_state=aggregator_state,
            algorithm_state=step.algorithm_state,
        )
        num_examples = sum(o.num_examples for o in outputs)
        return RoundResult(
            state=new_state,
            metrics=self._round_metrics(outputs, num_examples),
            measurements=dict(measurements),
            num_clients=len(outputs),
            num_examples=num_examples,
        )

    def _round_metrics(self, outputs: Sequence[ClientOutput], num_examples: int) -> "collections.OrderedDict[str, Any]":
        """The cohort's finalized train metrics; none when no client trained on an example.

        Clients count their examples whatever the model reports, so this is
        where every model interface learns that a round measured nothing
        (every update zeroed as non-finite, every dataset empty): its loss and
        accuracy are absent, not 0.0 (see ``fedsim.metrics``), and the record's
        ``num_examples`` of 0 says why.
        """
        if num_examples == 0:
            return collections.OrderedDict()
        return self._aggregate_metrics([o.metrics for o in outputs])

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
        return cohort_prep.prepare_cohort(client_datasets, client_ids, state.round_num + 1, self.prepare_train,
                                          self.prepare_client, self.model.input_spec)

    def empty_round(self, state: ServerState) -> RoundResult:
        """A round in which no client reported (an empty Poisson cohort, every client dropped out).

        Without a privacy mechanism the model and every state stay as they were.
        A privacy mechanism runs anyway, on one zero-weight stand-in message: its
        noise is released whether or not anyone took part, so an unchanged model
        cannot reveal an empty cohort, and the round is accounted like any other.
        """
        if mechanism.find(self.aggregator)[0] is not None:
            return self._mechanism_only_round(state)
        return RoundResult(
            state=attrs.evolve(state, round_num=state.round_num + 1),
            metrics=collections.OrderedDict(),
            measurements={},
            num_clients=0,
            num_examples=0,
        )

    def _mechanism_only_round(self, state: ServerState) -> RoundResult:
        messages = [stand_in_message(self.algorithm, self.non_trainable, state)]
        aggregate, aggregator_state, measurements = self._aggregate(state, messages, [0.0], Cohort([], [], False))
        non_trainable_change = aggregate.extras.pop(nt_rule.EXTRA, None)
        step = self.algorithm.server_update(state, aggregate)
        result = self._apply(state, step, aggregator_state, [], {**measurements, **step.measurements})
        return _with_non_trainable_change(result, non_trainable_change)

    def evaluate(
        self,
        model_weights: ModelWeights,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ):
        """Sum-then-finalize metrics of ``model_weights`` over the given datasets (see ``evaluate_clients``)."""
        return self._aggregate_metrics(self.evaluate_clients(model_weights, client_datasets, client_ids))

    def evaluate_clients(
        self,
        model_weights: ModelWeights,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> list:
        """Each client's unfinalized metrics of ``model_weights``, in the order given.

        Under ``non_trainable="per_client"`` (FedBN), a client (by ``client_ids``)
        with non-trainable weights of its own is evaluated with them; the others
        with the server's.
        """
        return evaluate_clients(self.executor, model_weights, [self.prepare_eval(d) for d in client_datasets],
                                client_ids, self.non_trainable_store)


@contextlib.contextmanager
def _collection_paused():
    """Python's cyclic garbage collector off for the block (unless it was off already).

    A round of 1,000 clients makes tens of thousands of short-lived
    containers (inputs, outputs, messages, metrics); alive across the 24
    young collections of a round, they count towards a full collection,
    which scans every object of the process (~440k with TensorFlow and
    Keras loaded: 0.4-0.5 s). Measured (logreg, 1,000 clients): one full
    collection every ~12 rounds, a mean of 36-52 ms a round; paused, none.
    Freed by reference counting when the round ends, they never reach the
    collector; what a round leaves in cycles is collected after it. The
    collector is process-wide: other threads go uncollected meanwhile too.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _with_non_trainable_change(result: RoundResult, change: Optional[list]) -> RoundResult:
    """Rule ``"average"``: the result with the cohort's averaged non-trainable change applied (None: as is)."""
    if change is None:
        return result
    model_weights = nt_rule.with_change(result.state.model_weights, change)
    return attrs.evolve(result, state=attrs.evolve(result.state, model_weights=model_weights))
