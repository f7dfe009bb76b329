"""SCAFFOLD with option I for the client control variate (Karimireddy, Kale,
Mohri, Reddi, Stich, Suresh, 2020, "SCAFFOLD: Stochastic Controlled Averaging
for Federated Learning", ICML, Algorithm 1 line 12).

Option I sets ``c_i+ = g_i(x)``: the client's gradient at the server model x,
here the full-batch gradient of its mean loss (the client step's start
statistics). The paper notes it can be more stable than option II at the
cost of one more pass over the client's data. Everything else is
``fedsim.algorithms.scaffold``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from fedsim.aggregators import Aggregator
from fedsim.algorithms.client_state import ClientStore, InMemoryClientStore
from fedsim.algorithms.scaffold import check_learning_rate, scaffold_algorithm
from fedsim.client import ClientTask, ClientWork
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.builder import build_process
from fedsim.learning.faults import FaultPolicy
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD


def _gradient_at_server_model(output, server_c, client_c):
    return output.start_gradient


def scaffold_option_i(population_size: int, client_learning_rate: float = 0.01, weighted: bool = False) -> Algorithm:
    """SCAFFOLD option I's blocks."""
    task = ClientTask(
        SGD(check_learning_rate(client_learning_rate)), weighted=weighted, gradient_offset=True, start_statistics=True
    )
    return scaffold_algorithm("scaffold_option_i", task, _gradient_at_server_model, population_size)


def build_scaffold_option_i(
    model_fn: Callable[[], Any],
    population_size: int,
    client_learning_rate: float = 0.01,
    server_learning_rate: float = 1.0,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    client_store: Optional[ClientStore] = None,
    weighted: bool = False,
    aggregator: Optional[Aggregator] = None,
    server_optimizer: Any = None,
    executor_fn: Optional[Callable[[ClientWork], Any]] = None,
    faults: Optional[FaultPolicy] = None,
) -> FederatedProcess:
    """Builds a SCAFFOLD option I process; the arguments are ``build_scaffold``'s."""
    return build_process(
        model_fn, scaffold_option_i(population_size, client_learning_rate, weighted),
        server_optimizer=server_optimizer or SGD(server_learning_rate), batch_size=batch_size,
        local_epochs=local_epochs, aggregator=aggregator, executor_fn=executor_fn, faults=faults,
        client_store=client_store if client_store is not None else InMemoryClientStore(),
    )
