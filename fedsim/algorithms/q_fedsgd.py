"""q-FedSGD (Li, Sanjabi, Beirami, Smith, 2020, "Fair Resource Allocation in
Federated Learning", ICLR), Algorithm 1.

Each client sends ``Delta_k = F_k(w)^q grad F_k(w)`` and
``h_k = q F_k(w)^(q-1) ||grad F_k(w)||^2 + L F_k(w)^q``; the server steps
``w <- w - sum_k Delta_k / sum_k h_k``. It is q-FedAvg's message on
FedSGD's client step: one ``SGD(1/L)`` step on the whole dataset as one
batch makes q-FedAvg's ``L (w - w_k)`` exactly ``grad F_k(w)``.
"""

from __future__ import annotations

from typing import Any, Callable

from fedsim.algorithms.qffl import check_q, qffl_message, qffl_server_update
from fedsim.client import ClientTask
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD


def q_fedsgd(q: float, lipschitz: float) -> Algorithm:
    """q-FedSGD's blocks, with the Lipschitz estimate ``L`` of the paper (> 0)."""
    if not lipschitz > 0:
        raise ValueError(f"lipschitz={lipschitz!r} must be > 0 (the paper's L, e.g. 1 / learning rate)")
    task = ClientTask(SGD(1.0 / lipschitz), weighted=False, start_statistics=True, forward_pass_gradients=True)
    return Algorithm("q_fedsgd", task, message=qffl_message(check_q(q), float(lipschitz)),
                     server_update=qffl_server_update, one_batch=True)


def build_q_fedsgd(model_fn: Callable[[], Any], q: float, lipschitz: float, **process_options: Any) -> FederatedProcess:
    """Builds a q-FedSGD process over client datasets of single (unbatched) examples.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      q: fairness parameter, >= 0 (0 is FedSGD with step ``1/L``).
      lipschitz: the paper's ``L``.
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
    """
    return build_process(model_fn, q_fedsgd(q, lipschitz), **process_options)
