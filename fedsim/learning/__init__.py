"""The federated round and what plugs into it: algorithms, the fault policy, the process builder."""
from fedsim.client import ClientOutput, ClientWork
from fedsim.learning.algorithm import Aggregate, Algorithm, ClientMessage, ServerStep
from fedsim.learning.builder import batch_and_repeat, build_process, client_prep
from fedsim.learning.fedavg import build_fedavg
from fedsim.learning.process import FederatedProcess, ProcessError, RoundResult, ServerState

__all__ = [
    "Aggregate",
    "Algorithm",
    "ClientMessage",
    "ClientOutput",
    "ClientWork",
    "FederatedProcess",
    "ProcessError",
    "RoundResult",
    "ServerState",
    "ServerStep",
    "batch_and_repeat",
    "build_fedavg",
    "build_process",
    "client_prep",
]
