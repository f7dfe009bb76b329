"""FedSGD (McMahan et al., 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS, the FedSGD baseline).

Each client computes one gradient of its mean loss over all its examples at
the server's model weights; the server averages the gradients weighted by
example count and applies them with its optimizer (``SGD(lr)`` is the paper's
``w <- w - lr * sum_k n_k/n g_k``).

Built from FedAvg's blocks: one local step of ``SGD(1.0)`` on the client's
whole dataset as a single batch makes the client delta exactly ``-g_k``, so it
runs on any executor.
"""

from __future__ import annotations

from typing import Any, Callable

from fedsim.client import ClientTask
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.builder import build_process
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD

def fedsgd(weighted: bool = True) -> Algorithm:
    """FedSGD's blocks: one ``SGD(1.0)`` step on one whole-dataset batch, so the delta is ``-g_k``."""
    return Algorithm("fedsgd", ClientTask(SGD(1.0), weighted=weighted, forward_pass_gradients=True), one_batch=True)


def build_fedsgd(
    model_fn: Callable[[], Any], server_optimizer: Any = None, weighted: bool = True, **process_options: Any
) -> FederatedProcess:
    """Builds a FedSGD process over client datasets of single (unbatched) examples.

    Args:
      model_fn: no-argument callable returning a new fedsim model.
      server_optimizer: applies the averaged gradient; default ``SGD(0.1)``.
      weighted: weight clients by example count (True, the paper) or equally.
      process_options: the run's blocks, as for ``fedsim.learning.build_process``
        (``aggregator``, ``executor_fn``, ``faults``,
        ``server_optimizer``, ...).
    """
    return build_process(model_fn, fedsgd(weighted), server_optimizer=server_optimizer or SGD(0.1),
                         **process_options)
