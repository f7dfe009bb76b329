"""Federated learning algorithms, one module per paper, each a short builder over shared blocks.

Every builder returns a process with ``initialize()``, ``next(state, datasets,
client_ids=None)`` and ``evaluate(model_weights, datasets)``, so ``simulate``
runs any of them.
"""

from fedsim.learning.client_state import InMemoryClientStore, NpzClientStore
from fedsim.algorithms.fedavg import build_fedavg
from fedsim.algorithms.feddyn import build_feddyn
from fedsim.algorithms.fednova import build_fednova
from fedsim.algorithms.fedopt import (
    build_fedopt,
    fedadagrad_server_optimizer,
    fedadam_server_optimizer,
    fedavgm_server_optimizer,
    fedyogi_server_optimizer,
)
from fedsim.algorithms.fedprox import build_fedprox
from fedsim.algorithms.fedsgd import build_fedsgd
from fedsim.algorithms.mime_lite import build_mime_lite
from fedsim.algorithms.q_fedsgd import build_q_fedsgd
from fedsim.algorithms.qffl import build_qffl
from fedsim.algorithms.scaffold import build_scaffold
from fedsim.algorithms.scaffold_option_i import build_scaffold_option_i
from fedsim.algorithms.registry import ALGORITHMS, AlgorithmBuildError, make_algorithm

__all__ = [
    "ALGORITHMS",
    "AlgorithmBuildError",
    "InMemoryClientStore",
    "NpzClientStore",
    "build_fedavg",
    "build_feddyn",
    "build_fednova",
    "build_fedopt",
    "build_fedprox",
    "build_fedsgd",
    "build_mime_lite",
    "build_q_fedsgd",
    "build_qffl",
    "build_scaffold",
    "build_scaffold_option_i",
    "fedadagrad_server_optimizer",
    "fedadam_server_optimizer",
    "fedavgm_server_optimizer",
    "fedyogi_server_optimizer",
    "make_algorithm",
]
