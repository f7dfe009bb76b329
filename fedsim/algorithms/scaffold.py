"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, 2020, "SCAFFOLD:
Stochastic Controlled Averaging for Federated Learning", ICML), Algorithm 1
with option II for the client control variate.

Client i starts from the server model x with y = x, takes K local steps
``y <- y - lr (g_i(y) - c_i + c)``, then sets ``c_i+ = c_i - c + (x - y) / (K lr)``.
The server averages ``y - x`` over the cohort S (unweighted, as in the paper)
and applies it with its optimizer (``SGD(server_learning_rate)``), and sets
``c <- c + |S|/N * mean(c_i+ - c_i)`` for a population of N clients.

As blocks of the round: the broadcast sends ``c - c_i`` as the client step's
gradient offset; the message carries ``c_i+ - c_i`` as the extra
``control_variate_delta`` (so the aggregator chain, DP and compression see
it) and ``c_i+`` as the client's new state. ``c`` lives in
``ServerState.algorithm_state["control_variate"]``; each ``c_i`` in the
process's client store, keyed by client id and versioned by round
(``fedsim.learning.client_state``), so a round replayed from an older
state reads the control variates it read then.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fedsim.client import ClientInputs, ClientTask
from fedsim.learning.algorithm import Aggregate, Algorithm, ClientMessage, ServerStep, population_size_check
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD

CONTROL_VARIATE_DELTA = "control_variate_delta"


def _init_state(model_weights):
    return {"control_variate": tuple(np.zeros_like(w) for w in model_weights.trainable)}


def _client_c(state, client_c):
    server_c = state.algorithm_state["control_variate"]
    return server_c, (client_c if client_c is not None else [np.zeros_like(c) for c in server_c])


def _broadcast(state, client_c) -> ClientInputs:
    server_c, client_c = _client_c(state, client_c)
    return ClientInputs(gradient_offset=[c - ci for c, ci in zip(server_c, client_c)])


def control_variate_message(new_control_variate: Callable) -> Callable:
    """The message of a client whose new ``c_i+`` is ``new_control_variate(output, c, c_i)``."""

    def message(output, inputs, client_c) -> ClientMessage:
        # c = (c - c_i) + c_i: the offset the client received, plus its own variate.
        client_c = client_c if client_c is not None else [np.zeros_like(o) for o in inputs.gradient_offset]
        server_c = [o + ci for o, ci in zip(inputs.gradient_offset, client_c)]
        if output.num_steps == 0:  # no examples: weight 0, and c_i stays
            return ClientMessage(output.delta, {CONTROL_VARIATE_DELTA: [np.zeros_like(c) for c in client_c]})
        new_c = [np.asarray(n, c.dtype) for n, c in zip(new_control_variate(output, server_c, client_c), client_c)]
        return ClientMessage(
            output.delta, {CONTROL_VARIATE_DELTA: [n - ci for n, ci in zip(new_c, client_c)]}, client_state=new_c
        )

    return message


def option_ii(client_learning_rate: float) -> Callable:
    """Option II: ``c_i+ = c_i - c + (x - y) / (K lr)``, where ``x - y`` is ``-delta``."""

    def new_control_variate(output, server_c, client_c):
        scale = 1.0 / (output.num_steps * client_learning_rate)
        return [ci - c - d * scale for ci, c, d in zip(client_c, server_c, output.delta)]

    return new_control_variate


def server_update(population_size: int) -> Callable:
    """``c <- c + |S|/N * mean(c_i+ - c_i)``; the server optimizer applies the mean delta."""

    def update(state, aggregate: Aggregate) -> ServerStep:
        fraction = aggregate.num_clients / population_size
        new_c = tuple(
            (c + fraction * np.asarray(d, np.float64)).astype(c.dtype)
            for c, d in zip(state.algorithm_state["control_variate"], aggregate.extras[CONTROL_VARIATE_DELTA])
        )
        return ServerStep(aggregate.delta, {"control_variate": new_c})

    return update


def check_learning_rate(client_learning_rate: float) -> float:
    if not client_learning_rate > 0:
        raise ValueError(f"client_learning_rate={client_learning_rate} must be > 0: c_i+ divides by it")
    return float(client_learning_rate)


def scaffold_algorithm(name: str, task: ClientTask, new_control_variate: Callable, population_size: int) -> Algorithm:
    """SCAFFOLD's blocks around a rule for the client's new control variate."""
    return Algorithm(
        name, task, _init_state, _broadcast, control_variate_message(new_control_variate),
        server_update(population_size_check(name, population_size)), client_state=True,
    )


def scaffold(population_size: int, client_learning_rate: float = 0.01, weighted: bool = False) -> Algorithm:
    """SCAFFOLD option II's blocks: plain local SGD with the control-variate gradient offset."""
    lr = check_learning_rate(client_learning_rate)
    task = ClientTask(SGD(lr), weighted=weighted, gradient_offset=True)
    return scaffold_algorithm("scaffold", task, option_ii(lr), population_size)


def build_scaffold(
    model_fn: Callable[[], Any], population_size: int, client_learning_rate: float = 0.01,
    server_learning_rate: float = 1.0, weighted: bool = False, **process_options: Any
) -> FederatedProcess:
    """Builds a SCAFFOLD (option II) process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      population_size: N, the number of clients in the population (scales the ``c`` update).
      client_learning_rate: local SGD step size (plain SGD, as option II assumes).
      server_learning_rate: the default server optimizer's step, ``SGD(server_learning_rate)``;
        a ``server_optimizer`` replaces it.
      weighted: average ``y - x`` and ``c_i+ - c_i`` weighted by example count (False: the paper).
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``batch_size``, ``local_epochs``, ``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
        ``client_store`` keeps the client control variates (default in memory).
    """
    process_options.setdefault("server_optimizer", SGD(server_learning_rate))
    return build_process(model_fn, scaffold(population_size, client_learning_rate, weighted), **process_options)
