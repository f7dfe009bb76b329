"""``enhance(model)``: a wrapper that checks a model when it is built and on every batch.

Seed 001 (TFF's ``EnhancedModel`` / ``EnhancedTrainableModel``). Catching a
malformed model at the door beats a shape error deep inside a traced graph.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from fedsim.models.legacy import LegacyModelAdapter, Model, as_variable_model
from fedsim.models.model_weights import ModelWeights
from fedsim.models.variable_model import BatchOutput, VariableModel


class ModelCheckError(ValueError):
    """Raised by ``enhance`` when a model breaks the model interface's contract."""


def _variable_name(variable: Any) -> str:
    return getattr(variable, "path", None) or getattr(variable, "name", repr(variable))


def _check_disjoint_collections(model: VariableModel) -> None:
    seen: dict[Any, str] = {}
    for collection in ("trainable_variables", "non_trainable_variables", "local_variables"):
        for variable in getattr(model, collection):
            key = variable.ref() if hasattr(variable, "ref") else id(variable)
            if key in seen and seen[key] != collection:
                raise ModelCheckError(
                    f"variable {_variable_name(variable)!r} appears in both {seen[key]} and "
                    f"{collection}; each variable must belong to exactly one collection"
                )
            seen[key] = collection


def _check_input_spec(model: VariableModel) -> None:
    spec = model.input_spec
    leaves = tf.nest.flatten(spec)
    bad = [leaf for leaf in leaves if not isinstance(leaf, tf.TensorSpec)]
    if not leaves or bad:
        raise ModelCheckError(
            f"input_spec must be a nested structure of tf.TensorSpec, but it holds "
            f"{[type(b).__name__ for b in bad] or 'nothing'}: {spec!r}. Use e.g. "
            "(tf.TensorSpec([None, 60], tf.float32), tf.TensorSpec([None], tf.int32))"
        )


def _check_metric_names(model: VariableModel) -> None:
    if isinstance(model, LegacyModelAdapter):
        return  # the older interface aggregates with federated_output_computation instead
    reported = list(model.report_local_unfinalized_metrics())
    finalized = list(model.metric_finalizers())
    if set(reported) != set(finalized):
        raise ModelCheckError(
            "report_local_unfinalized_metrics and metric_finalizers must name the same metrics; "
            f"only reported: {sorted(set(reported) - set(finalized))}, "
            f"only finalized: {sorted(set(finalized) - set(reported))}"
        )


def check_batch(batch_input: Any, input_spec: Any) -> None:
    """Raises ``ModelCheckError`` naming the field when a batch does not fit ``input_spec``."""
    try:
        tf.nest.assert_same_structure(batch_input, input_spec, check_types=False)
    except (ValueError, TypeError) as error:
        raise ModelCheckError(
            f"the batch's structure does not match input_spec {input_spec!r}: {error}"
        ) from None
    # One flattening order for both (keras.tree), so paths and values line up.
    for (path, spec), value in zip(keras.tree.flatten_with_path(input_spec), keras.tree.flatten(batch_input)):
        name = "/".join(str(p) for p in path) or "batch"
        tensor = tf.convert_to_tensor(value)
        if tensor.dtype != spec.dtype or not spec.shape.is_compatible_with(tensor.shape):
            raise ModelCheckError(
                f"batch field {name!r} has shape {tensor.shape} and dtype {tensor.dtype.name}, "
                f"which does not fit the input_spec {spec}; reshape or cast the dataset "
                "(e.g. with dataset.map) to match"
            )


class EnhancedModel(VariableModel):
    """A checked model: the wrapped model's interface plus sanity checks and ``.weights``."""

    def __init__(self, model: Any):
        self._original = model
        self._model = as_variable_model(model)
        _check_disjoint_collections(self._model)
        _check_input_spec(self._model)
        _check_metric_names(self._model)

    @property
    def wrapped(self) -> Any:
        """The model that was enhanced."""
        return self._original

    @property
    def weights(self) -> ModelWeights:
        """The current model weights as a ``ModelWeights`` value."""
        return ModelWeights.from_model(self._model)

    @property
    def trainable_variables(self):
        return self._model.trainable_variables

    @property
    def non_trainable_variables(self):
        return self._model.non_trainable_variables

    @property
    def local_variables(self):
        return self._model.local_variables

    @property
    def input_spec(self):
        return self._model.input_spec

    def forward_pass(self, batch_input, training=True):
        check_batch(batch_input, self.input_spec)
        return _check_output(self._model.forward_pass(batch_input, training=training), "forward_pass")

    def predict_on_batch(self, batch_input, training=True):
        return self._model.predict_on_batch(batch_input, training=training)

    def report_local_unfinalized_metrics(self):
        return self._model.report_local_unfinalized_metrics()

    def metric_finalizers(self):
        return self._model.metric_finalizers()

    def reset_metrics(self):
        self._model.reset_metrics()

    # Older interface, when the wrapped model has it.
    @property
    def uses_federated_output_computation(self) -> bool:
        return isinstance(self._model, LegacyModelAdapter)

    def report_local_outputs(self):
        return self._legacy("report_local_outputs").report_local_outputs()

    @property
    def federated_output_computation(self):
        return self._legacy("federated_output_computation").federated_output_computation

    def _legacy(self, name: str) -> Model:
        if not isinstance(self._model, LegacyModelAdapter):
            raise AttributeError(f"{name} belongs to the older Model interface, which this model lacks")
        return self._model.model


class EnhancedTrainableModel(EnhancedModel):
    """An ``EnhancedModel`` of a model that trains itself with ``train_on_batch``."""

    trains_itself = True

    def train_on_batch(self, batch_input):
        check_batch(batch_input, self.input_spec)
        return _check_output(self._model.train_on_batch(batch_input), "train_on_batch")


def _check_output(output: Any, method: str) -> BatchOutput:
    loss = getattr(output, "loss", None)
    if loss is None:
        raise ModelCheckError(
            f"{method} returned {type(output).__name__} without a loss; "
            "return BatchOutput(loss=..., predictions=..., num_examples=...)"
        )
    return output


def enhance(model: Any) -> EnhancedModel:
    """Wraps a model (either interface) with sanity checks; returns it as is if already enhanced."""
    if isinstance(model, EnhancedModel):
        return model
    adapted = as_variable_model(model)
    if getattr(adapted, "trains_itself", False):
        return EnhancedTrainableModel(model)
    return EnhancedModel(model)
