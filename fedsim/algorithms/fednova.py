"""FedNova (Wang, Liu, Liang, Joshi, Poor, 2020, "Tackling the Objective
Inconsistency Problem in Heterogeneous Federated Optimization", NeurIPS),
the vanilla local SGD case.

Clients that take more local steps pull the FedAvg average towards their own
optimum. FedNova normalizes: with ``tau_i`` local steps, ``d_i = delta_i / tau_i``
(the average step), ``p_i = n_i / n`` over the cohort, and the update is
``tau_eff * sum_i p_i d_i`` with ``tau_eff = sum_i p_i tau_i``. With equal
``tau_i`` it is FedAvg.

As blocks of the round: a client sends ``d_i`` in the delta slot and
``tau_i`` as the extra ``local_steps``; both are averaged with the example
counts by the aggregator chain, and the server scales the average ``d`` by
the average ``tau``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fedsim.client import ClientTask
from fedsim.learning.algorithm import Aggregate, Algorithm, ClientMessage, ServerStep
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD


def _message(output, inputs, client_state) -> ClientMessage:
    # A client with no steps has no examples: weight 0, and its delta (zero) stays as is.
    steps = max(output.num_steps, 1)
    return ClientMessage(
        [d / steps for d in output.delta], {"local_steps": [np.array(output.num_steps, np.float64)]}
    )


def _server_update(state, aggregate: Aggregate) -> ServerStep:
    tau_eff = float(aggregate.extras["local_steps"][0])
    return ServerStep([tau_eff * d for d in aggregate.delta], state.algorithm_state, {"fednova/tau_eff": tau_eff})


def fednova(client_learning_rate: float = 0.01) -> Algorithm:
    """FedNova's blocks: plain local SGD (``a_i = tau_i`` holds only without momentum)."""
    return Algorithm(
        "fednova", ClientTask(SGD(client_learning_rate), weighted=True),
        message=_message, server_update=_server_update, keep_partial_work=True,
    )


def build_fednova(
    model_fn: Callable[[], Any], client_learning_rate: float = 0.01, server_optimizer: Any = None,
    **process_options: Any
) -> FederatedProcess:
    """Builds a FedNova process (vanilla local SGD, clients weighted by example count).

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      client_learning_rate: local SGD step size.
      server_optimizer: applies the normalized update; default ``SGD(1.0)``.
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``batch_size``, ``local_epochs``, ``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
        Stragglers (``stragglers=Stragglers(0.5, seed)``) keep their partial work.
    """
    return build_process(model_fn, fednova(client_learning_rate), server_optimizer=server_optimizer,
                         **process_options)
