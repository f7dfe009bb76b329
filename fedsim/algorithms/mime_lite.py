"""MimeLite (Karimireddy, Jaggi, Kale, Mohri, Reddi, Stich, Suresh, 2021,
"Breaking the centralized barrier for cross-device federated learning", NeurIPS).

The server's optimizer state s (e.g. momentum) is sent to the clients and
applied at every local step without being updated there, so local steps
mimic the centralized optimizer: ``y <- base.next(s, y, g_i(y))`` with s
fixed. Each client also sends the full-batch gradient of its loss at the
server weights x; the server moves x by the average delta (times
``server_learning_rate``) and updates s with the average full-batch gradient:
``s <- base.next(s, x, mean grad)`` (the weights that call returns are unused).

``ServerState.optimizer_state`` is the base optimizer's state. Clients run one
after another through ``ClientWork`` (they take the server state as input).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from fedsim.aggregators import Aggregator, MeanAggregator
from fedsim.aggregators.base import weighted_sum
from fedsim.execution import SequentialExecutor
from fedsim.learning.client_work import ClientWork
from fedsim.learning.fedavg import batch_and_repeat
from fedsim.learning.process import ClientId, FederatedProcess, RoundResult, ServerState
from fedsim.models.model_fn import build_model
from fedsim.optimizers import SGD


class MimeLiteProcess(FederatedProcess):
    """A round of MimeLite; build it with ``build_mime_lite``."""

    def __init__(self, client_work: ClientWork, server_learning_rate: float, **process_blocks: Any):
        super().__init__(model=client_work.model, **process_blocks)
        self.client_work = client_work
        self.server_learning_rate = server_learning_rate

    def next(
        self,
        state: ServerState,
        client_datasets: Sequence[tf.data.Dataset],
        client_ids: Optional[Sequence[ClientId]] = None,
    ) -> RoundResult:
        """One MimeLite round."""
        cohort = self.prepare_cohort(state, client_datasets, client_ids)
        if not cohort.datasets:
            return self.empty_round(state)
        outputs, gradients = [], []
        for dataset in cohort.datasets:
            # A repeated dataset has the same mean gradient as one epoch of it.
            gradients.append(
                self.client_work.loss_and_gradient(state.model_weights, dataset).gradient
            )
            outputs.append(
                self.client_work.train(
                    state.model_weights, dataset, optimizer_state=state.optimizer_state
                )
            )
        weights = np.array([o.update_weight for o in outputs], dtype=np.float64)
        aggregate = self.aggregate(state, [o.delta for o in outputs], weights, cohort)
        trainable = list(state.model_weights.trainable)
        mean_gradient = [
            (g / max(weights.sum(), 1e-300)).astype(w.dtype)
            for g, w in zip(weighted_sum(gradients, weights), trainable)
        ]
        optimizer_state, _ = self.server_optimizer.next(
            state.optimizer_state, trainable, mean_gradient
        )
        new_trainable = [
            w + self.server_learning_rate * np.asarray(d, w.dtype)
            for w, d in zip(trainable, aggregate.result)
        ]
        new_state = ServerState(
            round_num=state.round_num + 1,
            model_weights=state.model_weights.with_trainable(new_trainable),
            optimizer_state=optimizer_state,
            aggregator_state=aggregate.state,
        )
        return self.round_result(new_state, outputs, aggregate.measurements)


def build_mime_lite(
    model_fn: Callable[[], Any],
    base_optimizer: Any = None,
    server_learning_rate: float = 1.0,
    weighted: bool = True,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    aggregator: Optional[Aggregator] = None,
) -> MimeLiteProcess:
    """Builds a MimeLite process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      base_optimizer: the optimizer mimicked, with the clients' learning rate; its state is the
        server's. Default ``SGD(0.01, momentum=0.9)``.
      server_learning_rate: scales the average delta applied to the server model (1: the paper).
      weighted: weight deltas and full-batch gradients by example count (True) or equally.
      batch_size: batch client datasets of single examples; None if already batched.
      local_epochs: passes over each client's data per round.
      aggregator: overrides the mean of the deltas.
    """
    base_optimizer = base_optimizer or SGD(0.01, momentum=0.9)
    client_work = ClientWork(
        build_model(model_fn), base_optimizer, weighted=weighted, freeze_optimizer_state=True
    )
    return MimeLiteProcess(
        client_work,
        server_learning_rate,
        executor=SequentialExecutor(client_work),
        aggregator=aggregator if aggregator is not None else MeanAggregator(weighted=weighted),
        server_optimizer=base_optimizer,
        prepare_train=batch_and_repeat(batch_size, local_epochs),
        prepare_eval=batch_and_repeat(batch_size, 1),
    )
