"""FedOpt: FedAvg with an adaptive server optimizer (Reddi, Charles, Zaheer,
Garrett, Rush, Konecny, Kumar, McMahan, 2021, "Adaptive Federated
Optimization", ICLR), and FedAvgM (Hsu, Qi, Brown, 2019, "Measuring the
Effects of Non-Identical Data Distribution for Federated Visual Classification").

Clients run FedAvg's local SGD; the server treats the negated average delta
as a pseudo-gradient for its optimizer. The ``*_server_optimizer`` helpers
build the paper's rules: no bias correction, ``epsilon`` = the adaptivity
``tau`` added to ``sqrt(v)``, and ``v`` starting at ``tau^2`` (the paper's
``v_{-1} >= tau^2``).
"""

from __future__ import annotations

from typing import Any, Callable

from fedsim.learning.fedavg import build_fedavg
from fedsim.learning.process import FederatedProcess
from fedsim.optimizers import SGD, Adagrad, Adam, Yogi
from fedsim.optimizers.schedules import LearningRate


def build_fedopt(
    model_fn: Callable[[], Any], server_optimizer: Any, **fedavg_options: Any
) -> FederatedProcess:
    """FedAvg's process with ``server_optimizer``; ``fedavg_options`` as for ``build_fedavg``."""
    if server_optimizer is None:
        raise ValueError(
            "build_fedopt needs a server_optimizer, e.g. fedadam_server_optimizer(0.01)"
        )
    return build_fedavg(model_fn, server_optimizer=server_optimizer, **fedavg_options)


def fedavgm_server_optimizer(learning_rate: LearningRate = 1.0, momentum: float = 0.9) -> SGD:
    """FedAvgM: server SGD with (heavy-ball) momentum."""
    return SGD(learning_rate, momentum=momentum)


def fedadam_server_optimizer(
    learning_rate: LearningRate, tau: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.99
) -> Adam:
    """FedAdam as in Reddi et al.'s Algorithm 2."""
    return Adam(
        learning_rate,
        beta_1,
        beta_2,
        epsilon=tau,
        initial_accumulator=tau**2,
        bias_correction=False,
    )


def fedyogi_server_optimizer(
    learning_rate: LearningRate, tau: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.99
) -> Yogi:
    """FedYogi as in Reddi et al.'s Algorithm 2."""
    return Yogi(
        learning_rate,
        beta_1,
        beta_2,
        epsilon=tau,
        initial_accumulator=tau**2,
        bias_correction=False,
    )


def fedadagrad_server_optimizer(
    learning_rate: LearningRate, tau: float = 1e-3, beta_1: float = 0.0
) -> Adagrad:
    """FedAdagrad as in Reddi et al.'s Algorithm 2 (``beta_1=0``: no server momentum)."""
    return Adagrad(learning_rate, beta_1=beta_1, epsilon=tau, initial_accumulator=tau**2)
