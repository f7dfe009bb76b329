"""Calling a user's ``model_fn``: checked at the door, so a bad one fails with a clear message.

A ``model_fn`` must build a *new* model on every call: processes, executors
and Ray actors each call it for a model of their own, and two of them sharing
one model object would overwrite each other's variables mid-round. The check
costs one extra model build when a process is built.
"""
from __future__ import annotations

from typing import Any, Callable

import keras

from fedsim.models.legacy import as_variable_model


class ModelFnError(TypeError):
    """Raised when a ``model_fn`` is not a callable that builds a new fedsim model each call."""


def _call(model_fn: Callable[[], Any]) -> Any:
    model = model_fn()
    if isinstance(model, keras.Model):
        raise ModelFnError(
            f"model_fn returned a Keras model ({type(model).__name__}); wrap it as a fedsim model: "
            "return fedsim.from_keras_model(model, loss=..., input_spec=...)"
        )
    try:
        as_variable_model(model)
    except TypeError as error:
        raise ModelFnError(f"model_fn returned {type(model).__name__}: {error}") from None
    return model


def build_model(model_fn: Callable[[], Any]) -> Any:
    """``model_fn()``, after checking it returns a fedsim model and a new one on each call."""
    if not callable(model_fn):
        raise ModelFnError(
            f"model_fn must be a callable with no arguments that builds a new model, got {model_fn!r}"
        )
    model = _call(model_fn)
    again = _call(model_fn)
    if again is model:
        raise ModelFnError(
            "model_fn returned the same model object twice; it must build a new model on every "
            "call (create the Keras model inside the function, not once outside it)"
        )
    if _shared_variables(model, again):
        raise ModelFnError(
            "model_fn returned two models that share variables (e.g. one Keras model wrapped "
            "twice); it must build a new model on every call (create the Keras model inside "
            "the function, not once outside it)"
        )
    return model


def _shared_variables(first: Any, second: Any) -> bool:
    first, second = as_variable_model(first), as_variable_model(second)
    ids = {id(v) for v in first.trainable_variables + first.non_trainable_variables}
    return any(id(v) in ids for v in second.trainable_variables + second.non_trainable_variables)
