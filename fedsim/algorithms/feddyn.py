"""FedDyn (Acar, Zhao, Matas, Mattina, Whatmough, Saligrama, 2021, "Federated
Learning Based on Dynamic Regularization", ICLR), Algorithm 1.

Client k keeps ``g_k``, the gradient of its loss at its last local model
(zero before its first round). From the server model ``theta`` it minimizes

    L_k(w) - <g_k, w> + alpha/2 ||w - theta||^2

with local SGD (the client step's proximal term ``alpha`` and gradient
offset ``-g_k``), reaching ``theta_k``, and sets ``g_k <- g_k - alpha (theta_k - theta)``.
The server keeps ``h`` (zero at first):

    h     <- h - alpha * (1/m) * sum_{k in P} (theta_k - theta)
    theta <- mean_{k in P}(theta_k) - h / alpha

for a population of m clients and a cohort P. As blocks of the round: the
delta slot carries ``theta_k - theta``, whose (unweighted) mean gives both
sums (``sum/m = |P|/m * mean``); the server delta ``mean - h/alpha`` goes
through the server optimizer (``SGD(1.0)`` is the paper).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fedsim.client import ClientInputs, ClientTask
from fedsim.learning.algorithm import Aggregate, Algorithm, ClientMessage, ServerStep, population_size_check
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD


def feddyn(population_size: int, alpha: float = 0.01, client_learning_rate: float = 0.01,
           weighted: bool = False) -> Algorithm:
    """FedDyn's blocks (``alpha`` > 0 is the paper's regularization strength)."""
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} must be > 0: the server divides h by it")
    population_size = population_size_check("feddyn", population_size)

    def init_state(model_weights):
        return {"h": tuple(np.zeros_like(w) for w in model_weights.trainable)}

    def broadcast(state, client_gradient) -> ClientInputs:
        if client_gradient is None:
            return ClientInputs(gradient_offset=[np.zeros_like(w) for w in state.model_weights.trainable])
        return ClientInputs(gradient_offset=[-g for g in client_gradient])

    def message(output, inputs, client_gradient) -> ClientMessage:
        if output.num_steps == 0:  # no examples: weight 0, and g_k stays
            return ClientMessage(output.delta)
        old = [-o for o in inputs.gradient_offset]
        return ClientMessage(output.delta, client_state=[g - alpha * d for g, d in zip(old, output.delta)])

    def server_update(state, aggregate: Aggregate) -> ServerStep:
        fraction = aggregate.num_clients / population_size
        h = tuple(
            (h - alpha * fraction * np.asarray(d, np.float64)).astype(h.dtype)
            for h, d in zip(state.algorithm_state["h"], aggregate.delta)
        )
        delta = [(np.asarray(d, np.float64) - hk / alpha).astype(d.dtype) for d, hk in zip(aggregate.delta, h)]
        return ServerStep(delta, {"h": h})

    task = ClientTask(SGD(client_learning_rate), weighted=weighted, proximal_mu=alpha, gradient_offset=True)
    return Algorithm("feddyn", task, init_state, broadcast, message, server_update, client_state=True)


def build_feddyn(
    model_fn: Callable[[], Any], population_size: int, alpha: float = 0.01, client_learning_rate: float = 0.01,
    weighted: bool = False, **process_options: Any
) -> FederatedProcess:
    """Builds a FedDyn process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      population_size: m, the number of clients in the population.
      alpha: the dynamic regularizer's strength (the paper tries 0.1, 0.01, 0.001).
      client_learning_rate: local SGD step size.
      weighted: average ``theta_k - theta`` by example count (False: the paper).
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``batch_size``, ``local_epochs``, ``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
        ``client_store`` keeps each client's ``g_k`` (default in memory).
    """
    return build_process(model_fn, feddyn(population_size, alpha, client_learning_rate, weighted), **process_options)
