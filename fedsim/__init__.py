"""fedsim: federated-learning simulation on TensorFlow 2 / Keras 3.

The public API in one place; each name lives in a small focused module.
"""
import os as _os

# TensorFlow's C++ runtime logs start-up and tf.data notices to stderr at INFO
# and WARNING level; a library must stay quiet. Only a default: set
# TF_CPP_MIN_LOG_LEVEL yourself to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from fedsim.aggregators import MeanAggregator
from fedsim.data import ClientData
from fedsim.federated import ClientValues, federated_max, federated_mean, federated_min, federated_sum
from fedsim.learning import (
    ClientOutput,
    ClientWork,
    FederatedProcess,
    RoundResult,
    ServerState,
    build_fedavg,
)
from fedsim.metrics import sum_then_finalize
from fedsim.models import (
    BatchOutput,
    EnhancedModel,
    EnhancedTrainableModel,
    Model,
    ModelWeights,
    TrainableModel,
    VariableModel,
    enhance,
    from_keras_model,
)
from fedsim.optimizers import SGD
from fedsim.simulation import SimulationResult, UniformSampler, simulate

__version__ = "0.1.0"

__all__ = [
    "BatchOutput",
    "ClientData",
    "ClientOutput",
    "ClientValues",
    "ClientWork",
    "EnhancedModel",
    "EnhancedTrainableModel",
    "FederatedProcess",
    "MeanAggregator",
    "Model",
    "ModelWeights",
    "RoundResult",
    "SGD",
    "ServerState",
    "SimulationResult",
    "TrainableModel",
    "UniformSampler",
    "VariableModel",
    "build_fedavg",
    "enhance",
    "federated_max",
    "federated_mean",
    "federated_min",
    "federated_sum",
    "from_keras_model",
    "simulate",
    "sum_then_finalize",
]
