"""Federated Averaging (McMahan et al., 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS).

Each client of the cohort runs ``local_epochs`` of minibatch SGD from the
server's model weights; the server averages the deltas, weighted by example
count (or unweighted), and applies them with its own optimizer (SGD with
learning rate 1.0 is the paper's algorithm).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import tensorflow as tf

from fedsim.aggregators import Aggregator, MeanAggregator
from fedsim.execution import make_executor
from fedsim.learning.client_work import ClientWork
from fedsim.learning.faults import FaultPolicy
from fedsim.learning.process import ClientId, ClientPrep, FederatedProcess
from fedsim.models.model_fn import build_model
from fedsim.optimizers import SGD


def batch_and_repeat(batch_size: Optional[int], local_epochs: int = 1):
    """The per-client training pipeline: batch (if ``batch_size``), then repeat for epochs."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size} must be a positive integer or None (pre-batched data)"
        )
    if local_epochs < 1:
        raise ValueError(f"local_epochs={local_epochs} must be >= 1")

    def prepare(dataset: tf.data.Dataset) -> tf.data.Dataset:
        if batch_size is not None:
            dataset = dataset.batch(batch_size)
        return dataset.repeat(local_epochs) if local_epochs > 1 else dataset

    return prepare


def client_prep(
    batch_size: Optional[int],
    local_epochs: int,
    stragglers: Any = None,
    keep_partial_work: bool = True,
    dropout: Any = None,
) -> ClientPrep:
    """Per-client training preparation with simulated stragglers and dropouts.

    Args:
      stragglers: has ``local_epochs(round_num, client_id, local_epochs) -> int``
        (e.g. ``fedsim.simulation.sampling.Stragglers``); None: everyone runs ``local_epochs``.
      keep_partial_work: a straggler trains its fewer epochs and reports (FedProx);
        False: it is dropped from the round (FedAvg in the FedProx paper).
      dropout: has ``reports(round_num, client_id) -> bool``; a client that does not
        report is dropped (e.g. ``fedsim.simulation.sampling.Dropout``).
    """
    batch_and_repeat(batch_size, local_epochs)  # validates both

    def prepare(
        dataset: tf.data.Dataset, round_num: int, client_id: ClientId
    ) -> Optional[tuple[tf.data.Dataset, int]]:
        if dropout is not None and not dropout.reports(round_num, client_id):
            return None
        epochs = local_epochs
        if stragglers is not None:
            epochs = stragglers.local_epochs(round_num, client_id, local_epochs)
            if epochs < local_epochs and not keep_partial_work:
                return None
        return batch_and_repeat(batch_size, epochs)(dataset), epochs

    return prepare


def build_fedavg(
    model_fn: Callable[[], Any],
    client_optimizer: Any = None,
    server_optimizer: Any = None,
    weighted: bool = True,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    aggregator: Optional[Aggregator] = None,
    executor_fn: Optional[Callable[[ClientWork], Any]] = None,
    stragglers: Any = None,
    dropout: Any = None,
    faults: Optional[FaultPolicy] = None,
) -> FederatedProcess:
    """Builds a FedAvg process.

    Args:
      model_fn: no-argument callable returning a new fedsim model (e.g. from
        ``from_keras_model``); called once.
      client_optimizer: functional client optimizer; default ``SGD(0.01)``.
      server_optimizer: functional server optimizer; default ``SGD(1.0)``.
      weighted: weight clients by example count (True) or equally (False).
      batch_size: batch client datasets of single examples; ``None`` if already batched.
      local_epochs: passes over each client's data per round.
      aggregator: overrides the mean (e.g. a robust or private aggregator chain).
      executor_fn: builds the executor from the client work; default ``make_executor("auto", ...)``,
        the fastest executor that applies (vectorized for Keras models, else sequential).
      stragglers: simulated stragglers (``fedsim.simulation.sampling.Stragglers``); FedAvg
        drops them from the round, as in the FedProx paper's comparison.
      dropout: simulated clients that fail to report (``fedsim.simulation.sampling.Dropout``).
    """
    model = build_model(model_fn)
    client_work = ClientWork(model, client_optimizer or SGD(0.01), weighted=weighted)
    return FederatedProcess(
        model=client_work.model,
        executor=executor_fn(client_work) if executor_fn else make_executor("auto", client_work),
        aggregator=aggregator if aggregator is not None else MeanAggregator(weighted=weighted),
        server_optimizer=server_optimizer or SGD(1.0),
        prepare_train=batch_and_repeat(batch_size, local_epochs),
        prepare_eval=batch_and_repeat(batch_size, 1),
        prepare_client=_client_prep_if_needed(batch_size, local_epochs, stragglers, False, dropout),
        faults=faults,
    )


def _client_prep_if_needed(batch_size, local_epochs, stragglers, keep_partial_work, dropout):
    if stragglers is None and dropout is None:
        return None
    return client_prep(batch_size, local_epochs, stragglers, keep_partial_work, dropout)
