"""Model blocks -> a no-argument function returning a fedsim model for the data's element spec.

Three things a model block brings besides the architecture:

- the image shape of the CNN (``input_shape``), inferred from the data when
  the block leaves it out (:func:`image_input_shape`);
- a custom ``module:function``, looked up in the config file's folder and the
  working directory before ``sys.path`` (:func:`resolve_custom_function`;
  which modules a config may name is :mod:`fedsim.experiment.preflight`'s
  rule), its result checked (:func:`_custom_model`);
- ``initial_weights``, a ``.npz`` every model the run builds starts from
  (:func:`read_initial_weights`, :func:`fit_initial_weights`).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from fedsim.data.npz import NpzError, read_npz
from fedsim.experiment import blocks
# ModelBuildError, the family of this module's errors, is importable from here as before.
from fedsim.experiment.custom_code import (  # noqa: F401
    CustomFunction, ModelBuildError, module_search_path, resolve_custom_function,
)
from fedsim.models import ModelWeights, from_keras_model, zoo
from fedsim.models.keras_model import KerasModelError
from fedsim.models.legacy import as_variable_model


class InputShapeError(ModelBuildError):
    """The data's examples do not fit the model's input shape, or the shape cannot be inferred."""


class InitialWeightsError(ModelBuildError):
    """``model.initial_weights`` cannot start this model: unreadable, or arrays that do not fit it."""


class CustomModelError(ModelBuildError):
    """A custom model function that raised, or returned something fedsim cannot train."""


class OutputWidthError(CustomModelError):
    """A custom model with fewer outputs than the data has classes."""


# Image shapes ---------------------------------------------------------------
def image_input_shape(input_shape: Optional[Sequence[int]], data_shape: Sequence[Optional[int]]) -> tuple[int, ...]:
    """The ``(height, width, channels)`` an image model sees, for examples of shape ``data_shape``.

    ``input_shape`` given: it must hold as many values as one example.
    Unset: an example ``[H, W, C]`` is used as is, ``[H, W]`` gets one
    channel, and a flat vector of ``s * s`` values is an ``s x s`` image with
    one channel (LEAF's FEMNIST: 784 -> 28x28x1). Anything else asks for
    ``model.input_shape``.
    """
    data_shape = tuple(data_shape)
    if any(size is None for size in data_shape):
        raise InputShapeError(
            f"the data's examples have shape {list(data_shape)}, with an unknown size; an image model "
            "needs examples of one fixed shape (pad or resize them in preprocessing)"
        )
    values = math.prod(data_shape)
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise InputShapeError(f"model.input_shape={list(shape)} must be [height, width, channels]")
        if math.prod(shape) != values:
            raise InputShapeError(
                f"model.input_shape={list(shape)} holds {math.prod(shape)} values, but each example of the data "
                f"has shape {list(data_shape)} ({values} values); give a shape with {values} values"
            )
        return shape
    if len(data_shape) == 3:
        return data_shape
    if len(data_shape) == 2:
        return (*data_shape, 1)
    side = math.isqrt(values)
    if len(data_shape) == 1 and side * side == values:
        return (side, side, 1)
    raise InputShapeError(
        f"cannot tell the image shape of examples of shape {list(data_shape)} ({values} values: not a square "
        "image with one channel); set model.input_shape = [height, width, channels], e.g. [32, 32, 3] "
        "for 3072 values"
    )


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
        return zoo.fedavg_cnn(num_classes, image_input_shape(model.input_shape, x_shape), data_shape=x_shape)
    if isinstance(model, blocks.CharLstm):
        return zoo.char_lstm(num_classes, x_shape[0], model.embedding_dim, model.units)
    raise TypeError(f"no builder for model block {model!r}")


# Custom model functions -------------------------------------------------------
# Initial weights ---------------------------------------------------------------
_POSITIONAL_KEY = re.compile(r"arr_(\d+)")


def read_initial_weights(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """The ``(key, array)`` pairs of a ``.npz`` of initial model weights, in the model's variable order.

    The format: one array per model variable, the trainable variables first,
    then the non-trainable ones, each in the model's own order (that of
    ``ModelWeights``: ``model.trainable_variables + model.non_trainable_variables``,
    also TensorFlow Federated's ``ModelWeights`` order). Either

    - positional: ``np.savez(path, *arrays)`` (keys ``arr_0``, ``arr_1``, ...); or
    - named: ``np.savez(path, **{name: array})`` in that order, each key the
      variable's name or a path ending in it (``kernel``, ``dense/kernel``);
      the names are checked against the model's variables position by
      position, which catches e.g. a Keras ``get_weights()`` list whose
      BatchNorm statistics sit between trainable variables.

    Raises:
      InitialWeightsError: the file is missing, not a ``.npz``, empty, or mixes the two kinds of keys.
    """
    path = Path(path)
    if not path.is_file():
        raise InitialWeightsError(
            f"model.initial_weights={str(path)!r}: no such file; give a .npz of one array per model variable "
            "(a relative path is read from the config file's folder)"
        )
    try:
        entries = list(read_npz(path).items())
    except NpzError as error:  # one reader for every .npz a user writes, damage named (fedsim.data.npz)
        raise InitialWeightsError(
            f"cannot read model.initial_weights={str(path)!r}: {error.reason}; write it again with "
            "np.savez(path, *arrays), one array per model variable"
        ) from None
    if not entries:
        raise InitialWeightsError(f"model.initial_weights={str(path)!r} holds no arrays")
    positional = [_POSITIONAL_KEY.fullmatch(key) for key, _ in entries]
    if all(positional):
        # arr_10 before arr_2 is a zip-order accident, never a different order of variables.
        return sorted(entries, key=lambda entry: int(_POSITIONAL_KEY.fullmatch(entry[0]).group(1)))
    if any(positional):
        raise InitialWeightsError(
            f"model.initial_weights={str(path)!r} mixes positional keys (arr_N) with named ones "
            f"({[key for key, _ in entries]}); save all arrays one way"
        )
    return entries


def _short_name(variable: Any) -> str:
    # Keras 3 names a variable 'kernel' (its path 'sequential_3/dense_7/kernel' counts models and
    # layers built in the process, so it is never compared); a tf.Variable says 'dense/kernel:0'.
    return str(getattr(variable, "name", "")).removesuffix(":0").rpartition("/")[2]


def _label(variable: Any) -> str:
    return str(getattr(variable, "path", None) or getattr(variable, "name", "?")).removesuffix(":0")


def fit_initial_weights(entries: Sequence[tuple[str, np.ndarray]], model: Any, source: str) -> ModelWeights:
    """``entries`` (from :func:`read_initial_weights`) as the ``ModelWeights`` of ``model``.

    Checks the count, each name (named keys only) and shape, and that each
    array casts to its variable's dtype without changing kind (float64 ->
    float32 yes, float -> int no), then casts.

    Raises:
      InitialWeightsError: naming the position, the key, the model's variable and the fix.
    """
    trainable, non_trainable = list(model.trainable_variables), list(model.non_trainable_variables)
    variables = trainable + non_trainable
    if len(entries) != len(variables):
        listing = ", ".join(f"{_short_name(v)} {tuple(v.shape)}" for v in variables)
        raise InitialWeightsError(
            f"{source} holds {len(entries)} arrays, but the model has {len(variables)} variables "
            f"({len(trainable)} trainable, then {len(non_trainable)} non-trainable: {listing}); "
            "save one array per variable, in that order"
        )
    arrays = []
    for position, ((key, array), variable) in enumerate(zip(entries, variables)):
        where = f"{source}: array {position} ({key!r}) is for variable {position} of the model, {_label(variable)!r}"
        name = _short_name(variable)
        if not _POSITIONAL_KEY.fullmatch(key) and key.removesuffix(":0").rpartition("/")[2] != name:
            raise InitialWeightsError(
                f"{where}, named {name!r}; the arrays are out of order or from another model (order: "
                f"{[_short_name(v) for v in variables]}, trainable first)"
            )
        if tuple(array.shape) != tuple(variable.shape):
            raise InitialWeightsError(f"{where}, of shape {tuple(variable.shape)}, but the array has shape "
                                      f"{tuple(array.shape)}")
        dtype = np.dtype(getattr(variable.dtype, "name", None) or str(variable.dtype))
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise InitialWeightsError(f"{where}, of dtype {dtype.name}; a {array.dtype.name} array does not "
                                      "cast to it without losing its values' kind")
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            raise InitialWeightsError(f"{where}; the array holds NaN or Inf: start from finite weights")
        arrays.append(array.astype(dtype))
    return ModelWeights(arrays[: len(trainable)], arrays[len(trainable):])


def _starting_from(build: Callable[[], Any], path: str) -> Callable[[], Any]:
    """``build`` whose every model starts from the weights in ``path`` (read once, here)."""
    entries = read_initial_weights(path)
    source = f"model.initial_weights={path!r}"

    def model_fn() -> Any:
        model = build()
        if not hasattr(model, "trainable_variables"):
            return model  # not a model: fedsim.models.model_fn says what is wrong with it
        # Every model the run builds (the process's, each executor's) holds these weights, so
        # process.initialize() starts round 1 from them and a resumed run rebuilds the same models.
        fit_initial_weights(entries, model, source).assign_weights_to(model)
        return model

    return model_fn


def _custom_model(function: CustomFunction, model: blocks.CustomModel, input_spec: Any, num_classes: int) -> Any:
    """``function(**model.params)`` as a fedsim model: as returned, or from ``(keras_model, loss[, metrics])``.

    Raises:
      CustomModelError: the function raised (chained, so run.log has its
        traceback), or returned something else, or a loss Keras cannot use.
      OutputWidthError: a Keras model with fewer outputs than the data's classes.
    """
    where = f"model.function {model.function!r}"
    try:
        built = function(**model.params)
    except ModelBuildError:
        raise  # its module cannot be imported: already named
    except Exception as error:
        raise CustomModelError(
            f"{where} raised {type(error).__name__}: {error} (called with model.params {model.params}); fix the "
            "function or its params (the traceback is in the run directory's run.log)"
        ) from error
    if isinstance(built, keras.Model):
        raise CustomModelError(f"{where} returned a bare Keras model; return (model, loss)")
    if isinstance(built, tuple):
        if len(built) not in (2, 3) or not isinstance(built[0], keras.Model):
            kinds = ", ".join(type(item).__name__ for item in built)
            raise CustomModelError(
                f"{where} returned a tuple of {len(built)} ({kinds}); return (keras_model, loss) or "
                "(keras_model, loss, metrics), or a fedsim model"
            )
        keras_model, loss, *metrics = built
        _check_output_width(keras_model, num_classes, where)
        try:
            return from_keras_model(keras_model, loss, input_spec, metrics[0] if metrics else None)
        except KerasModelError as error:
            raise CustomModelError(f"{where} returned a model fedsim cannot wrap: {error}") from None
    try:
        as_variable_model(built)
    except TypeError as error:
        raise CustomModelError(f"{where} returned {type(built).__name__}: {error}; or return "
                               "(keras_model, loss)") from None
    return built


def _check_output_width(keras_model: keras.Model, num_classes: int, where: str) -> None:
    """Refuses a single-output model narrower than the data's classes (one logit for two classes is binary)."""
    try:
        outputs = keras_model.outputs
    except AttributeError:
        return  # a subclassed model, built only when first called: nothing to compare yet
    if not outputs or len(outputs) != 1:
        return
    width = outputs[0].shape[-1]
    if width is None or width >= num_classes or (width == 1 and num_classes == 2):
        return
    raise OutputWidthError(
        f"{where} returned a model with {width} outputs, but the data has {num_classes} classes (labels 0 to "
        f"{num_classes - 1}); give its last layer {num_classes} units, e.g. keras.layers.Dense({num_classes})"
    )


def model_fn_for(model: blocks.ModelBlock, element_spec: Any, num_classes: int) -> Callable[[], Any]:
    """The model function of ``model`` for batches of ``element_spec`` ``(x, y)`` elements.

    Built-in models are classifiers trained with sparse softmax cross-entropy
    on logits and report accuracy. A custom ``function`` may return a fedsim
    model as is, or ``(keras_model, loss)`` / ``(keras_model, loss, metrics)``.
    With ``model.initial_weights``, every model built starts from that file's
    weights (read here, checked at the first build: before round one).
    """
    x_spec, y_spec = element_spec
    input_spec = (
        tf.TensorSpec([None, *x_spec.shape], x_spec.dtype),
        tf.TensorSpec([None, *y_spec.shape], y_spec.dtype),
    )
    if isinstance(model, blocks.CustomModel):
        function = resolve_custom_function(model.function, model.module_dir)

        def build():
            return _custom_model(function, model, input_spec, num_classes)
    else:
        if x_spec.dtype == tf.string:  # e.g. LEAF's Sent140 or Shakespeare shards: raw text
            raise InputShapeError(
                f"model.name={model.name!r} takes numbers, but the data's examples are text (tf.string); "
                "use a custom model that encodes the text, or data that holds it encoded"
            )
        if isinstance(model, blocks.FedAvgCnn):
            image_input_shape(model.input_shape, x_spec.shape)  # a shape problem is named before any build

        def build():
            return from_keras_model(
                _keras_model(model, list(x_spec.shape), num_classes),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                input_spec=input_spec,
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            )

    return build if model.initial_weights is None else _starting_from(build, model.initial_weights)
