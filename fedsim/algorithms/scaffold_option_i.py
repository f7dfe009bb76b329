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

from typing import Any, Callable

from fedsim.algorithms.scaffold import check_learning_rate, scaffold_algorithm
from fedsim.client import ClientTask
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.builder import build_process
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
    model_fn: Callable[[], Any], population_size: int, client_learning_rate: float = 0.01,
    server_learning_rate: float = 1.0, weighted: bool = False, **process_options: Any
) -> FederatedProcess:
    """Builds a SCAFFOLD option I process; the arguments are ``build_scaffold``'s."""
    process_options.setdefault("server_optimizer", SGD(server_learning_rate))
    return build_process(model_fn, scaffold_option_i(population_size, client_learning_rate, weighted),
                         **process_options)
