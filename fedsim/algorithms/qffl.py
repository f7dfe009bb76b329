"""q-FedAvg (Li, Sanjabi, Beirami, Smith, 2020, "Fair Resource Allocation in
Federated Learning", ICLR), Algorithm 2.

Minimizes ``sum_k p_k F_k^(q+1) / (q+1)``: larger ``q`` weighs clients with
high loss more, for a more uniform accuracy across clients; ``q=0`` is FedAvg's
objective. Client k runs local SGD from w to w_k and, with ``L = 1 / lr``:

    dw_k  = L (w - w_k)
    Delta = F_k(w)^q dw_k
    h_k   = q F_k(w)^(q-1) ||dw_k||^2 + L F_k(w)^q
    w    <- w - sum_k Delta_k / sum_k h_k

``F_k(w)`` is the client's mean training loss at the server weights. As in
the authors' code, ``1e-10`` is added to ``F_k`` before taking powers, so
``q < 1`` stays finite for a client with zero loss.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from fedsim.aggregators import MeanAggregator
from fedsim.aggregators.base import AggregationOutput
from fedsim.execution import SequentialExecutor
from fedsim.learning.client_work import ClientWork
from fedsim.learning.fedavg import batch_and_repeat
from fedsim.learning.process import ClientId, FederatedProcess, RoundResult, ServerState
from fedsim.models.model_fn import build_model
from fedsim.optimizers import SGD

_LOSS_FLOOR = 1e-10


class QFFLProcess(FederatedProcess):
    """A round of q-FedAvg; build it with ``build_qffl``."""

    def __init__(self, client_work: ClientWork, q: float, lipschitz: float, **process_blocks: Any):
        super().__init__(model=client_work.model, **process_blocks)
        self.client_work = client_work
        self.q = q
        self.lipschitz = lipschitz

    def next(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> RoundResult:
        """One q-FedAvg round (local training on the executor)."""
        cohort = self.prepare_cohort(state, client_datasets, client_ids)
        if not cohort.datasets:
            return self.empty_round(state)
        losses = [
            self.client_work.loss_and_gradient(state.model_weights, d).loss for d in cohort.datasets
        ]
        outputs = self.executor.train(state.model_weights, cohort.datasets)
        q, lipschitz = self.q, self.lipschitz
        numerator = [np.zeros(w.shape, np.float64) for w in state.model_weights.trainable]
        denominator = 0.0
        for loss, output in zip(losses, outputs):
            loss = loss + _LOSS_FLOOR
            step = [-lipschitz * np.asarray(d, np.float64) for d in output.delta]
            for total, s in zip(numerator, step):
                total += loss**q * s
            squared_norm = sum(float(np.sum(s * s)) for s in step)
            denominator += q * loss ** (q - 1) * squared_norm + lipschitz * loss**q
        update = [-n / denominator for n in numerator]
        aggregate = AggregationOutput(
            update, state.aggregator_state, {"qffl_denominator": denominator}
        )
        return self.finish_round(state, outputs, update, aggregate)


def build_qffl(
    model_fn: Callable[[], Any],
    q: float,
    client_learning_rate: float = 0.01,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    executor_fn: Optional[Callable[[ClientWork], Any]] = None,
) -> QFFLProcess:
    """Builds a q-FedAvg process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      q: fairness parameter, >= 0 (the paper uses 0.001 to 15 depending on the data).
      client_learning_rate: local SGD step size; the Lipschitz estimate is ``L = 1 / lr``.
      batch_size: batch client datasets of single examples; None if already batched.
      local_epochs: passes over each client's data per round.
      executor_fn: builds the executor from the client work; default sequential.
    """
    if not q >= 0:
        raise ValueError(f"q={q!r} must be >= 0 (0 gives FedAvg's objective)")
    if not client_learning_rate > 0:
        raise ValueError(f"client_learning_rate={client_learning_rate!r} must be > 0: L = 1 / lr")
    client_work = ClientWork(build_model(model_fn), SGD(client_learning_rate), weighted=False)
    return QFFLProcess(
        client_work,
        float(q),
        1.0 / client_learning_rate,
        executor=(executor_fn or SequentialExecutor)(client_work),
        # Unused by the update rule; it gives the server state its aggregator slot.
        aggregator=MeanAggregator(weighted=False),
        server_optimizer=SGD(1.0),
        prepare_train=batch_and_repeat(batch_size, local_epochs),
        prepare_eval=batch_and_repeat(batch_size, 1),
    )
