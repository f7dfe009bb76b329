"""Models: the seed interfaces, the Keras wrapper, sanity checks and ``ModelWeights``."""
from fedsim.models.enhanced import (
    EnhancedModel,
    EnhancedTrainableModel,
    ModelCheckError,
    check_batch,
    enhance,
)
from fedsim.models.keras_model import KerasModelError, KerasVariableModel, from_keras_model
from fedsim.models.legacy import LegacyModelAdapter, Model, TrainableModel, as_variable_model
from fedsim.models.model_weights import ModelWeights, WeightsMismatchError
from fedsim.models.own_optimizers import HiddenStateError
from fedsim.models.variable_model import BatchOutput, VariableModel

__all__ = [
    "BatchOutput",
    "EnhancedModel",
    "EnhancedTrainableModel",
    "HiddenStateError",
    "KerasModelError",
    "KerasVariableModel",
    "LegacyModelAdapter",
    "Model",
    "ModelCheckError",
    "ModelWeights",
    "TrainableModel",
    "VariableModel",
    "WeightsMismatchError",
    "as_variable_model",
    "check_batch",
    "enhance",
    "from_keras_model",
]
