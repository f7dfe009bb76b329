"""Learning processes: client work, the federated round, and algorithm builders."""
from fedsim.learning.client_work import ClientOutput, ClientWork
from fedsim.learning.fedavg import batch_and_repeat, build_fedavg
from fedsim.learning.process import FederatedProcess, ProcessError, RoundResult, ServerState

__all__ = [
    "ClientOutput",
    "ClientWork",
    "FederatedProcess",
    "ProcessError",
    "RoundResult",
    "ServerState",
    "batch_and_repeat",
    "build_fedavg",
]
