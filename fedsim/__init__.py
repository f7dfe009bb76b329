"""fedsim: federated-learning simulation on TensorFlow 2 / Keras 3.

The public API in one place; each name lives in a small focused module and is
imported on first use (PEP 562), so ``import fedsim`` and ``fedsim --help``
do not pay for loading TensorFlow until something needs it.
"""
import importlib as _importlib
import os as _os

# TensorFlow's C++ runtime logs tf.data and runtime notices to stderr at INFO
# and WARNING level; a library must stay quiet. Only a default: set
# TF_CPP_MIN_LOG_LEVEL yourself to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Threads per op: fedsim trains clients side by side, so each op gets a share
# of the cores, not all of them (see fedsim.runtime; set TF_NUM_INTRAOP_THREADS
# yourself to choose). Set before TensorFlow starts, which reads it once.
from fedsim import runtime as _runtime  # noqa: E402  (stdlib only, no TensorFlow)

_runtime.apply_default_threads()

__version__ = "0.1.0"

_EXPORTS = {
    "fedsim.aggregators": ["MeanAggregator", "build_aggregator"],
    "fedsim.data": ["ClientData"],
    "fedsim.federated": ["ClientValues", "federated_max", "federated_mean", "federated_min", "federated_sum"],
    "fedsim.learning": ["ClientOutput", "ClientWork", "FederatedProcess", "RoundResult", "ServerState",
                        "build_fedavg"],
    "fedsim.metrics": ["sum_then_finalize"],
    "fedsim.models": ["BatchOutput", "EnhancedModel", "EnhancedTrainableModel", "Model", "ModelWeights",
                      "TrainableModel", "VariableModel", "enhance", "from_keras_model"],
    "fedsim.optimizers": ["SGD"],
    "fedsim.simulation": ["SimulationResult", "UniformSampler", "simulate"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
