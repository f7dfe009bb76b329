"""MimeLite (Karimireddy, Jaggi, Kale, Mohri, Reddi, Stich, Suresh, 2021,
"Breaking the centralized barrier for cross-device federated learning", NeurIPS).

The base optimizer's state s (e.g. momentum) is sent to the clients and
applied at every local step without being updated there, so local steps
mimic the centralized optimizer: ``y <- base.next(s, y, g_i(y))`` with s
fixed. Each client also sends the full-batch gradient of its loss at the
server weights x (the extra ``gradient``); the server updates s with the
average full-batch gradient, ``s <- base.next(s, x, mean grad)`` (the weights
that call returns are unused), and its own optimizer applies the average
delta (``SGD(server_learning_rate)`` by default; 1.0 is the paper).

``ServerState.algorithm_state["optimizer_state"]`` is the base optimizer's state.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fedsim.client import ClientInputs, ClientTask
from fedsim.learning.algorithm import Aggregate, Algorithm, ClientMessage, ServerStep
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD


def mime_lite(client_optimizer: Any = None, weighted: bool = True) -> Algorithm:
    """MimeLite's blocks around the base optimizer ``client_optimizer`` (default ``SGD(0.01, momentum=0.9)``)."""
    base = client_optimizer or SGD(0.01, momentum=0.9)

    def init_state(model_weights):
        return {"optimizer_state": base.init(list(model_weights.trainable))}

    def broadcast(state, client_state) -> ClientInputs:
        return ClientInputs(optimizer_state=state.algorithm_state["optimizer_state"])

    def message(output, inputs, client_state) -> ClientMessage:
        return ClientMessage(output.delta, {"gradient": output.start_gradient})

    def server_update(state, aggregate: Aggregate) -> ServerStep:
        trainable = list(state.model_weights.trainable)
        gradient = [np.asarray(g, w.dtype) for g, w in zip(aggregate.extras["gradient"], trainable)]
        optimizer_state, _ = base.next(state.algorithm_state["optimizer_state"], trainable, gradient)
        return ServerStep(aggregate.delta, {"optimizer_state": optimizer_state})

    task = ClientTask(base, weighted=weighted, freeze_optimizer_state=True, start_statistics=True)
    return Algorithm("mime_lite", task, init_state, broadcast, message, server_update)


def build_mime_lite(
    model_fn: Callable[[], Any], client_optimizer: Any = None, server_learning_rate: float = 1.0,
    weighted: bool = True, **process_options: Any
) -> FederatedProcess:
    """Builds a MimeLite process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      client_optimizer: the base optimizer mimicked, with the clients' learning rate; its state is the
        server's. Default ``SGD(0.01, momentum=0.9)``.
      server_learning_rate: the default server optimizer's step, ``SGD(server_learning_rate)``
        on the average delta (1: the paper); a ``server_optimizer`` replaces it.
      weighted: weight deltas and full-batch gradients by example count (True) or equally.
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``batch_size``, ``local_epochs``, ``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
    """
    process_options.setdefault("server_optimizer", SGD(server_learning_rate))
    return build_process(model_fn, mime_lite(client_optimizer, weighted), **process_options)
