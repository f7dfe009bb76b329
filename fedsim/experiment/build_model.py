"""Model blocks -> a no-argument function returning a fedsim model for the data's element spec."""
from __future__ import annotations

import importlib
from typing import Any, Callable

import keras
import tensorflow as tf

from fedsim.experiment import blocks
from fedsim.models import from_keras_model, zoo


class ModelBuildError(ValueError):
    """A model block that cannot be built (e.g. a custom function that cannot be imported)."""


def _keras_model(model: blocks.ModelBlock, x_shape: list[int], num_classes: int) -> keras.Model:
    if isinstance(model, (blocks.LogisticRegression, blocks.MultiLayerPerceptron)):
        num_features = 1
        for size in x_shape:
            num_features *= size
        if isinstance(model, blocks.LogisticRegression):
            core = zoo.logistic_regression(num_features, num_classes)
        else:
            core = zoo.mlp(num_features, num_classes, model.hidden)
        if len(x_shape) == 1:
            return core
        # Images and other multi-axis inputs: flatten in the model so the data keeps its shape.
        return keras.Sequential([keras.Input(tuple(x_shape)), keras.layers.Flatten(), core])
    if isinstance(model, blocks.FedAvgCnn):
        return zoo.fedavg_cnn(num_classes, x_shape)
    if isinstance(model, blocks.CharLstm):
        return zoo.char_lstm(num_classes, x_shape[0], model.embedding_dim, model.units)
    raise TypeError(f"no builder for model block {model!r}")


def _import(path: str) -> Callable[..., Any]:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelBuildError(f"model.function {path!r}: cannot import {module_name!r} ({error})") from None
    if not callable(getattr(module, attribute, None)):
        raise ModelBuildError(f"model.function {path!r}: {module_name!r} has no function {attribute!r}")
    return getattr(module, attribute)


def model_fn_for(model: blocks.ModelBlock, element_spec: Any, num_classes: int) -> Callable[[], Any]:
    """The model function of ``model`` for batches of ``element_spec`` ``(x, y)`` elements.

    Built-in models are classifiers trained with sparse softmax cross-entropy
    on logits and report accuracy. A custom ``function`` may return a fedsim
    model as is, or ``(keras_model, loss)`` / ``(keras_model, loss, metrics)``.
    """
    x_spec, y_spec = element_spec
    input_spec = (
        tf.TensorSpec([None, *x_spec.shape], x_spec.dtype),
        tf.TensorSpec([None, *y_spec.shape], y_spec.dtype),
    )
    if isinstance(model, blocks.CustomModel):
        function = _import(model.function)

        def custom_model_fn():
            built = function(**model.params)
            if isinstance(built, keras.Model):
                raise ModelBuildError(
                    f"model.function {model.function!r} returned a bare Keras model; return (model, loss)"
                )
            if isinstance(built, tuple):
                keras_model, loss, *metrics = built
                return from_keras_model(keras_model, loss, input_spec, metrics[0] if metrics else None)
            return built

        return custom_model_fn

    def model_fn():
        return from_keras_model(
            _keras_model(model, list(x_spec.shape), num_classes),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=input_spec,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    return model_fn
