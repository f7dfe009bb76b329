"""q-FedAvg (Li, Sanjabi, Beirami, Smith, 2020, "Fair Resource Allocation in
Federated Learning", ICLR), Algorithm 2.

Minimizes ``sum_k p_k F_k^(q+1) / (q+1)``: larger ``q`` weighs clients with
high loss more, for a more uniform accuracy across clients; ``q=0`` is FedAvg's
objective. Client k runs local SGD from w to w_k and, with ``L = 1 / lr``:

    dw_k  = L (w - w_k)
    Delta = F_k(w)^q dw_k
    h_k   = q F_k(w)^(q-1) ||dw_k||^2 + L F_k(w)^q
    w    <- w - sum_k Delta_k / sum_k h_k

``F_k(w)`` is the client's mean training loss at the server weights (the
client step's start statistics). As in the authors' code, ``1e-10`` is added
to ``F_k`` before taking powers, so ``q < 1`` stays finite for a client with
zero loss.

As blocks of the round: a client sends ``Delta_k`` in the delta slot and
``h_k`` as the extra ``h``; the aggregator chain averages both over the
cohort (unweighted), and the ratio of the means is the ratio of the sums.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fedsim.client import ClientTask
from fedsim.learning.algorithm import Aggregate, Algorithm, ClientMessage, ServerStep
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD

_LOSS_FLOOR = 1e-10


def qffl_message(q: float, lipschitz: float) -> Callable:
    """The client's ``(Delta_k, h_k)`` from its step ``dw_k = -L delta`` and its start loss."""

    def message(output, inputs, client_state) -> ClientMessage:
        loss = output.start_loss + _LOSS_FLOOR
        step = [-lipschitz * np.asarray(d, np.float64) for d in output.delta]
        squared_norm = sum(float(np.sum(s * s)) for s in step)
        h = q * loss ** (q - 1) * squared_norm + lipschitz * loss**q
        return ClientMessage([loss**q * s for s in step], {"h": [np.array(h, np.float64)]})

    return message


def qffl_server_update(state, aggregate: Aggregate) -> ServerStep:
    """``w <- w - mean Delta / mean h`` (a zero step when no client counted)."""
    mean_h = float(aggregate.extras["h"][0])
    scale = -1.0 / mean_h if mean_h > 0 else 0.0
    trainable = state.model_weights.trainable
    delta = [(scale * np.asarray(d, np.float64)).astype(w.dtype) for d, w in zip(aggregate.delta, trainable)]
    return ServerStep(delta, state.algorithm_state, {"qffl/mean_h": mean_h})


def check_q(q: float) -> float:
    if not q >= 0:
        raise ValueError(f"q={q!r} must be >= 0 (0 gives FedAvg's objective)")
    return float(q)


def qffl(q: float, client_learning_rate: float = 0.01) -> Algorithm:
    """q-FedAvg's blocks: plain local SGD with ``L = 1 / client_learning_rate``."""
    if not client_learning_rate > 0:
        raise ValueError(f"client_learning_rate={client_learning_rate!r} must be > 0: L = 1 / lr")
    task = ClientTask(SGD(client_learning_rate), weighted=False, start_statistics=True)
    return Algorithm(
        "qffl", task, message=qffl_message(check_q(q), 1.0 / client_learning_rate), server_update=qffl_server_update
    )


def build_qffl(
    model_fn: Callable[[], Any], q: float, client_learning_rate: float = 0.01, **process_options: Any
) -> FederatedProcess:
    """Builds a q-FedAvg process.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      q: fairness parameter, >= 0 (the paper uses 0.001 to 15 depending on the data).
      client_learning_rate: local SGD step size; the Lipschitz estimate is ``L = 1 / lr``.
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``batch_size``, ``local_epochs``, ``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
    """
    return build_process(model_fn, qffl(q, client_learning_rate), **process_options)
