"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, 2020, "SCAFFOLD:
Stochastic Controlled Averaging for Federated Learning", ICML), Algorithm 1
with option II for the client control variate.

Client i starts from the server model x with y = x, takes K local steps
``y <- y - lr (g_i(y) - c_i + c)``, then sets ``c_i+ = c_i - c + (x - y) / (K lr)``.
The server averages ``y - x`` over the cohort S (unweighted, as in the paper)
and applies it with step size ``server_lr``, and sets
``c <- c + |S|/N * mean(c_i+ - c_i)`` for a population of N clients.

``c`` lives in ``ServerState.algorithm_state["control_variate"]``; each
``c_i`` in a client store keyed by client id and versioned by round
(``fedsim.algorithms.client_state``), so rounds need ``client_ids`` and a
round replayed from an older state reads the control variates it read then. Clients run one after another through
``ClientWork`` (the per-client inputs do not fit the executor interface).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf

from fedsim.aggregators import Aggregator, MeanAggregator
from fedsim.algorithms.client_state import ClientStore, InMemoryClientStore
from fedsim.execution import SequentialExecutor
from fedsim.learning.client_work import ClientWork
from fedsim.learning.fedavg import batch_and_repeat
from fedsim.learning.process import (
    ClientId,
    FederatedProcess,
    ProcessError,
    RoundResult,
    ServerState,
)
from fedsim.models.model_fn import build_model
from fedsim.models.model_weights import ModelWeights
from fedsim.optimizers import SGD


class ScaffoldProcess(FederatedProcess):
    """FedAvg's round with control variates; build it with ``build_scaffold``."""

    def __init__(
        self,
        client_work: ClientWork,
        client_learning_rate: float,
        population_size: int,
        client_store: ClientStore,
        **process_blocks: Any,
    ):
        super().__init__(model=client_work.model, **process_blocks)
        self.client_work = client_work
        self.client_learning_rate = client_learning_rate
        self.population_size = population_size
        self.client_store = client_store

    def initialize(self, model_weights: Optional[ModelWeights] = None) -> ServerState:
        """FedAvg's initial state with a zero server control variate."""
        state = super().initialize(model_weights)
        zeros = tuple(np.zeros_like(w) for w in state.model_weights.trainable)
        return attrs.evolve(state, algorithm_state={"control_variate": zeros})

    def next(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> RoundResult:
        """One SCAFFOLD round; ``client_ids`` are required to find each client's control variate."""
        if client_ids is None:
            raise ProcessError(
                "SCAFFOLD keeps a control variate per client: pass client_ids (one stable id per "
                "dataset) to next(), as simulate() does"
            )
        cohort = self.prepare_cohort(state, client_datasets, client_ids)
        if not cohort.datasets:
            return self.empty_round(state)
        server_c = state.algorithm_state["control_variate"]
        round_num = state.round_num + 1
        outputs, c_deltas = [], []
        for client_id, dataset in zip(cohort.client_ids, cohort.datasets):
            client_c = self.client_store.get(client_id, before_round=round_num)
            if client_c is None:
                client_c = [np.zeros_like(c) for c in server_c]
            offset = [c - ci for c, ci in zip(server_c, client_c)]
            output = self.client_work.train(state.model_weights, dataset, gradient_offset=offset)
            if output.num_steps > 0:
                scale = 1.0 / (output.num_steps * self.client_learning_rate)
                # Option II: (x - y) / (K lr) is -delta / (K lr).
                new_c = [ci - c - d * scale for ci, c, d in zip(client_c, server_c, output.delta)]
                self.client_store.put(client_id, new_c, round_num)
                c_deltas.append([n - ci for n, ci in zip(new_c, client_c)])
            outputs.append(output)
        aggregate = self.aggregate(
            state, [o.delta for o in outputs], [o.update_weight for o in outputs], cohort
        )
        # |S|/N * mean over S of (c_i+ - c_i) is the sum over S divided by N.
        new_server_c = tuple(
            (c + sum(d[k] for d in c_deltas) / self.population_size).astype(c.dtype)
            for k, c in enumerate(server_c)
        )
        return self.finish_round(
            state, outputs, aggregate.result, aggregate, {"control_variate": new_server_c}
        )


def build_scaffold(
    model_fn: Callable[[], Any],
    population_size: int,
    client_learning_rate: float = 0.01,
    server_learning_rate: float = 1.0,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    client_store: Optional[ClientStore] = None,
    weighted: bool = False,
    aggregator: Optional[Aggregator] = None,
) -> ScaffoldProcess:
    """Builds a SCAFFOLD process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      population_size: N, the number of clients in the population (scales the ``c`` update).
      client_learning_rate: local SGD step size (plain SGD, as option II assumes).
      server_learning_rate: the global step size applied to the average ``y - x``.
      batch_size: batch client datasets of single examples; None if already batched.
      local_epochs: passes over each client's data per round.
      client_store: where client control variates persist; default in memory
        (``NpzClientStore(directory)`` for large populations or resumable runs).
      weighted: average ``y - x`` weighted by example count (False: the paper).
      aggregator: overrides the mean of ``y - x``.
    """
    if population_size < 1:
        raise ValueError(
            f"population_size={population_size} must be >= 1 (the number of clients N)"
        )
    if not client_learning_rate > 0:
        raise ValueError(
            f"client_learning_rate={client_learning_rate} must be > 0: c_i+ divides by it"
        )
    client_work = ClientWork(build_model(model_fn), SGD(client_learning_rate), weighted=weighted)
    return ScaffoldProcess(
        client_work,
        client_learning_rate,
        population_size,
        client_store if client_store is not None else InMemoryClientStore(),
        executor=SequentialExecutor(client_work),
        aggregator=aggregator if aggregator is not None else MeanAggregator(weighted=weighted),
        server_optimizer=SGD(server_learning_rate),
        prepare_train=batch_and_repeat(batch_size, local_epochs),
        prepare_eval=batch_and_repeat(batch_size, 1),
    )
