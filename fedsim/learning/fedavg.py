"""Federated Averaging (McMahan et al., 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS).

Each client of the cohort runs ``local_epochs`` of minibatch SGD from the
server's model weights; the server averages the deltas, weighted by example
count (or unweighted), and applies them with its own optimizer (SGD with
learning rate 1.0 is the paper's algorithm). As an ``Algorithm`` it is the
record with every default: clients send their delta, the server applies the mean.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from fedsim.aggregators import Aggregator
from fedsim.client import ClientTask, ClientWork
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.builder import build_process
from fedsim.learning.faults import FaultPolicy
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD


def fedavg(client_optimizer: Any = None, weighted: bool = True) -> Algorithm:
    """FedAvg's blocks: local training with ``client_optimizer`` (None: the model's own
    ``train_on_batch`` if it has one, else ``SGD(0.01)``)."""
    return Algorithm("fedavg", ClientTask(client_optimizer, weighted=weighted))


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
      client_optimizer: functional client optimizer; default ``SGD(0.01)``, or for a model
        that trains itself (``train_on_batch``) its own optimizer, which then refuses another.
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
      faults: how a round treats failing clients and non-finite updates.
    """
    return build_process(
        model_fn, fedavg(client_optimizer, weighted), server_optimizer=server_optimizer or SGD(1.0),
        batch_size=batch_size, local_epochs=local_epochs, aggregator=aggregator, executor_fn=executor_fn,
        stragglers=stragglers, dropout=dropout, faults=faults,
    )
