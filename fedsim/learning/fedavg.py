"""Federated Averaging (McMahan et al., 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS).

Each client of the cohort runs ``local_epochs`` of minibatch SGD from the
server's model weights; the server averages the deltas, weighted by example
count (or unweighted), and applies them with its own optimizer (SGD with
learning rate 1.0 is the paper's algorithm). As an ``Algorithm`` it is the
record with every default: clients send their delta, the server applies the mean.
"""

from __future__ import annotations

from typing import Any, Callable

from fedsim.client import ClientTask
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.builder import build_process
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
    **process_options: Any,
) -> FederatedProcess:
    """Builds a FedAvg process.

    Args:
      model_fn: no-argument callable returning a new fedsim model (e.g. from
        ``from_keras_model``); called once.
      client_optimizer: functional client optimizer; default ``SGD(0.01)``, or for a model
        that trains itself (``train_on_batch``) its own optimizer, which then refuses another.
      server_optimizer: functional server optimizer; default ``SGD(1.0)``.
      weighted: weight clients by example count (True) or equally (False).
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``batch_size``, ``local_epochs``, ``aggregator``, ``executor_fn``,
        ``stragglers``, ``dropout``, ``faults``, ``seed``, ...); FedAvg drops
        stragglers from the round, as in the FedProx paper's comparison.
    """
    return build_process(
        model_fn, fedavg(client_optimizer, weighted), server_optimizer=server_optimizer or SGD(1.0),
        **process_options,
    )
