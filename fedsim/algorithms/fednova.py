"""FedNova (Wang, Liu, Liang, Joshi, Poor, 2020, "Tackling the Objective
Inconsistency Problem in Heterogeneous Federated Optimization", NeurIPS),
the vanilla local SGD case.

Clients that take more local steps pull the FedAvg average towards their own
optimum. FedNova normalizes: with ``tau_i`` local steps, ``d_i = delta_i / tau_i``
(the average step), ``p_i = n_i / n`` over the cohort, and the update is
``tau_eff * sum_i p_i d_i`` with ``tau_eff = sum_i p_i tau_i``. With equal
``tau_i`` it is FedAvg.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf

from fedsim.aggregators import Aggregator, MeanAggregator
from fedsim.execution import SequentialExecutor
from fedsim.learning.client_work import ClientWork
from fedsim.learning.fedavg import batch_and_repeat, client_prep
from fedsim.learning.process import (
    ClientId,
    FederatedProcess,
    ProcessError,
    RoundResult,
    ServerState,
)
from fedsim.models.model_fn import build_model
from fedsim.optimizers import SGD


class FedNovaProcess(FederatedProcess):
    """FedAvg's round with normalized averaging; build it with ``build_fednova``."""

    def next(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> RoundResult:
        """One FedNova round (clients on the executor, like FedAvg)."""
        cohort = self.prepare_cohort(state, client_datasets, client_ids)
        if not cohort.datasets:
            return self.empty_round(state)
        outputs = self.executor.train(state.model_weights, cohort.datasets)
        if any(o.num_examples > 0 and o.num_steps == 0 for o in outputs):
            raise ProcessError(
                f"FedNova needs each client's local step count, but executor "
                f"{type(self.executor).__name__} reports num_steps=0; use an executor that "
                "returns ClientWork.train's ClientOutput.num_steps (e.g. SequentialExecutor)"
            )
        # A client with no steps has no examples: weight 0, and its delta (zero) stays as is.
        normalized = [[d / max(o.num_steps, 1) for d in o.delta] for o in outputs]
        counts = np.array(self.update_weights(outputs, cohort), dtype=np.float64)
        steps = np.array([o.num_steps for o in outputs], dtype=np.float64)
        tau_eff = float(counts @ steps / counts.sum()) if counts.sum() > 0 else 0.0
        aggregate = self.aggregate(state, normalized, counts, cohort)
        update = [tau_eff * a for a in aggregate.result]
        aggregate = attrs.evolve(
            aggregate, measurements={**aggregate.measurements, "tau_eff": tau_eff}
        )
        return self.finish_round(state, outputs, update, aggregate)


def build_fednova(
    model_fn: Callable[[], Any],
    client_learning_rate: float = 0.01,
    server_optimizer: Any = None,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    stragglers: Any = None,
    aggregator: Optional[Aggregator] = None,
    executor_fn: Optional[Callable[[ClientWork], Any]] = None,
) -> FedNovaProcess:
    """Builds a FedNova process (vanilla local SGD, clients weighted by example count).

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      client_learning_rate: local SGD step size (no momentum: ``a_i = tau_i`` holds only then).
      server_optimizer: applies the normalized update; default ``SGD(1.0)``.
      batch_size: batch client datasets of single examples; None if already batched.
      local_epochs: epochs a client that does not straggle runs.
      stragglers: e.g. ``Stragglers(0.5, seed)``: clients doing fewer epochs, kept.
      aggregator: overrides the weighted mean of the normalized deltas.
      executor_fn: builds the executor from the client work; default sequential.
    """
    client_work = ClientWork(build_model(model_fn), SGD(client_learning_rate), weighted=True)
    return FedNovaProcess(
        model=client_work.model,
        executor=(executor_fn or SequentialExecutor)(client_work),
        aggregator=aggregator if aggregator is not None else MeanAggregator(weighted=True),
        server_optimizer=server_optimizer or SGD(1.0),
        prepare_train=batch_and_repeat(batch_size, local_epochs),
        prepare_eval=batch_and_repeat(batch_size, 1),
        prepare_client=(
            client_prep(batch_size, local_epochs, stragglers) if stragglers is not None else None
        ),
    )
