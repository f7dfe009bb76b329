"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, 2020, "Federated
Optimization in Heterogeneous Networks", MLSys).

Each client minimizes ``F_k(w) + mu/2 ||w - w_global||^2`` with local SGD
from the server's model weights. Clients may do different amounts of work: a
straggler finishes only some of its ``local_epochs`` and still reports its
partial solution (the paper's "inexact" local solvers), where FedAvg drops it.
With ``mu=0`` and no stragglers it is exactly FedAvg.
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


def fedprox(mu: float, client_optimizer: Any = None, weighted: bool = True) -> Algorithm:
    """FedProx's blocks: FedAvg's, with the proximal term ``mu`` in the client step."""
    return Algorithm("fedprox", ClientTask(client_optimizer or SGD(0.01), weighted=weighted, proximal_mu=mu))


def build_fedprox(
    model_fn: Callable[[], Any],
    mu: float,
    client_optimizer: Any = None,
    server_optimizer: Any = None,
    weighted: bool = True,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    stragglers: Any = None,
    dropout: Any = None,
    aggregator: Optional[Aggregator] = None,
    executor_fn: Optional[Callable[[ClientWork], Any]] = None,
    faults: Optional[FaultPolicy] = None,
) -> FederatedProcess:
    """Builds a FedProx process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      mu: proximal coefficient, >= 0 (the paper tries 0.001 to 1).
      client_optimizer: local solver; default ``SGD(0.01)``.
      server_optimizer: default ``SGD(1.0)`` (plain averaging).
      weighted: weight clients by example count (True) or equally.
      batch_size: batch client datasets of single examples; None if already batched.
      local_epochs: epochs a client that does not straggle runs.
      stragglers: e.g. ``Stragglers(0.9, seed)``; stragglers keep their partial work.
      dropout: e.g. ``Dropout(0.1, seed)``; clients that do not report are left out.
      aggregator: overrides the mean.
      executor_fn: builds the executor from the client work; default ``make_executor("auto", ...)``.
      faults: how a round treats failing clients and non-finite updates.
    """
    return build_process(
        model_fn, fedprox(mu, client_optimizer, weighted), server_optimizer=server_optimizer or SGD(1.0),
        batch_size=batch_size, local_epochs=local_epochs, aggregator=aggregator, executor_fn=executor_fn,
        stragglers=stragglers, keep_partial_work=True, dropout=dropout, faults=faults,
    )
