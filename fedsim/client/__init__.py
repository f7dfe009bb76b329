"""The client step: one definition of local training, below both the round and the executors.

``ClientWork`` trains one model (any model kind) client by client;
``KerasClientStep`` is the same step written statelessly for the executors
that batch a cohort. ``task`` holds the values that cross the client boundary.
"""
from fedsim.client.task import ClientFailure, ClientInputs, ClientOutput, ClientTask, NO_INPUTS
from fedsim.client.work import ClientOptimizerError, ClientWork, LossAndGradient

__all__ = [
    "ClientFailure",
    "ClientOptimizerError",
    "ClientInputs",
    "ClientOutput",
    "ClientTask",
    "ClientWork",
    "LossAndGradient",
    "NO_INPUTS",
]
