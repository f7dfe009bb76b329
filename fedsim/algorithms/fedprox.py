"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, 2020, "Federated
Optimization in Heterogeneous Networks", MLSys).

Each client minimizes ``F_k(w) + mu/2 ||w - w_global||^2`` with local SGD
from the server's model weights. Clients may do different amounts of work: a
straggler finishes only some of its ``local_epochs`` and still reports its
partial solution (the paper's "inexact" local solvers), where FedAvg drops it.
With ``mu=0`` and no stragglers it is exactly FedAvg.
"""

from __future__ import annotations

from typing import Any, Callable

from fedsim.client import ClientTask
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD


def fedprox(mu: float, client_optimizer: Any = None, weighted: bool = True) -> Algorithm:
    """FedProx's blocks: FedAvg's, with the proximal term ``mu`` in the client step."""
    if not mu >= 0:
        raise ValueError(f"mu={mu!r} must be >= 0 (0 is FedAvg)")
    return Algorithm("fedprox", ClientTask(client_optimizer or SGD(0.01), weighted=weighted, proximal_mu=mu),
                     keep_partial_work=True)


def build_fedprox(
    model_fn: Callable[[], Any], mu: float, client_optimizer: Any = None, weighted: bool = True, **process_options: Any
) -> FederatedProcess:
    """Builds a FedProx process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      mu: proximal coefficient, >= 0 (the paper tries 0.001 to 1).
      client_optimizer: local solver; default ``SGD(0.01)``.
      weighted: weight clients by example count (True) or equally.
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``batch_size``, ``local_epochs``, ``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
        Stragglers (``stragglers=Stragglers(0.9, seed)``) keep their partial work.
    """
    return build_process(model_fn, fedprox(mu, client_optimizer, weighted), **process_options)
