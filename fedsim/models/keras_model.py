"""``from_keras_model``: wraps an uncompiled Keras 3 model as a ``VariableModel``."""
from __future__ import annotations

import collections
from functools import partial
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from fedsim.models.variable_model import BatchOutput, VariableModel


class KerasModelError(ValueError):
    """Raised when a Keras model, its losses or metrics cannot be wrapped."""


def _tf_variable(variable: Any) -> tf.Variable:
    # Keras 3 wraps a tf.Variable under the TensorFlow backend; graphs and tapes
    # want the tf.Variable itself.
    return variable.value if isinstance(variable, keras.Variable) else variable


def split_batch(batch_input: Any) -> tuple[Any, Any]:
    """``(x, y)`` from a batch given as a 2-tuple or a mapping with keys ``x`` and ``y``."""
    if isinstance(batch_input, collections.abc.Mapping):
        if "x" not in batch_input or "y" not in batch_input:
            raise KerasModelError(
                f"a mapping batch needs keys 'x' and 'y', got keys {sorted(batch_input)}; "
                "map your dataset to {'x': features, 'y': labels} or to (features, labels)"
            )
        return batch_input["x"], batch_input["y"]
    if isinstance(batch_input, (tuple, list)) and len(batch_input) == 2:
        return batch_input[0], batch_input[1]
    raise KerasModelError(
        f"a batch must be (x, y) or {{'x': ..., 'y': ...}}, got {type(batch_input).__name__}"
    )


class _KerasMetricFinalizer:
    """Turns a Keras metric's summed state variables into its result, on the server."""

    def __init__(self, metric: keras.metrics.Metric):
        self._metric = type(metric).from_config(metric.get_config())

    def __call__(self, unfinalized: Sequence[Any]) -> np.ndarray:
        for variable, value in zip(self._metric.variables, unfinalized):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        return np.asarray(self._metric.result())


def _numpy_dtype(metric: keras.metrics.Metric) -> Optional[np.dtype]:
    try:
        return np.dtype(metric.dtype)
    except TypeError:  # e.g. bfloat16: NumPy has no such type
        return None


def _metric_finalizer(metric: keras.metrics.Metric) -> Callable[[Sequence[Any]], np.ndarray]:
    """The metric's finalizer: NumPy for unmodified Mean/Sum results, else the metric's ``result()``.

    Running ``result()`` costs a few eager TensorFlow ops per metric and round
    (about a millisecond for a small model's whole round); Mean and Sum (and
    their subclasses that keep ``result``, such as the accuracies) are one
    float division or cast, done here with the same dtype and the same
    ``divide_no_nan`` rule.
    """
    dtype = _numpy_dtype(metric)
    result = type(metric).result
    if dtype is not None and result is keras.metrics.Mean.result and len(metric.variables) == 2:
        return partial(_mean_result, dtype=dtype)
    if dtype is not None and result is keras.metrics.Sum.result and len(metric.variables) == 1:
        return partial(_sum_result, dtype=dtype)
    return _KerasMetricFinalizer(metric)


def _mean_result(unfinalized: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    total, count = (np.asarray(u, dtype=dtype) for u in unfinalized)
    return np.asarray(total / count if count != 0 else np.zeros_like(total))


def _sum_result(unfinalized: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    return np.asarray(unfinalized[0], dtype=dtype)


def _mean_finalizer(unfinalized: Sequence[Any]) -> np.ndarray:
    total, count = (np.asarray(u, dtype=np.float64) for u in unfinalized)
    return np.asarray(total / count if count else 0.0, dtype=np.float32)


def _sum_finalizer(unfinalized: Sequence[Any]) -> np.ndarray:
    return np.asarray(unfinalized[0])


class KerasVariableModel(VariableModel):
    """A Keras 3 model (TensorFlow backend) seen through the ``VariableModel`` interface.

    Metrics: ``loss`` (the example-weighted mean loss), ``num_examples``,
    ``num_batches``, then each Keras metric by its name (``output_name/metric``
    for models with several outputs). Unfinalized values are the metrics'
    state variables; finalizers run the Keras metric's own ``result()``.
    """

    def __init__(
        self,
        keras_model: keras.Model,
        loss: Any,
        input_spec: Any,
        metrics: Optional[Sequence[Any]] = None,
        loss_weights: Optional[Sequence[float]] = None,
    ):
        self._keras_model = keras_model
        self._input_spec = input_spec
        self._losses, self._loss_weights = _normalize_losses(loss, loss_weights)
        self._metrics_per_output = _normalize_metrics(metrics, len(self._losses))
        _ensure_built(keras_model, input_spec)

        self._loss_sum = tf.Variable(0.0, trainable=False, name="loss_sum")
        self._loss_count = tf.Variable(0.0, trainable=False, name="loss_count")
        self._num_examples = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_examples")
        self._num_batches = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_batches")
        self._named_metrics = self._name_metrics(keras_model)

    # Variables -------------------------------------------------------------
    @property
    def keras_model(self) -> keras.Model:
        return self._keras_model

    @property
    def trainable_variables(self):
        return [_tf_variable(v) for v in self._keras_model.trainable_variables]

    @property
    def non_trainable_variables(self):
        return [_tf_variable(v) for v in self._keras_model.non_trainable_variables]

    @property
    def local_variables(self):
        own = [self._loss_sum, self._loss_count, self._num_examples, self._num_batches]
        return own + [_tf_variable(v) for _, m in self._named_metrics for v in m.variables]

    @property
    def input_spec(self):
        return self._input_spec

    # Computation -----------------------------------------------------------
    def predict_on_batch(self, batch_input, training=True):
        return self._keras_model(batch_input, training=training)

    def forward_pass(self, batch_input, training=True):
        x, y = split_batch(batch_input)
        predictions = self._keras_model(x, training=training)
        loss = self._loss(y, predictions)
        num_examples = tf.shape(tf.nest.flatten(x)[0])[0]
        count = tf.cast(num_examples, tf.float32)
        self._loss_sum.assign_add(tf.cast(loss, tf.float32) * count)
        self._loss_count.assign_add(count)
        self._num_examples.assign_add(tf.cast(num_examples, tf.int64))
        self._num_batches.assign_add(1)
        ys, outputs = self._per_output(y, predictions)
        for metrics, y_true, y_pred in zip(self._metrics_per_output, ys, outputs):
            for metric in metrics:
                metric.update_state(y_true, y_pred)
        return BatchOutput(loss=loss, predictions=predictions, num_examples=num_examples)

    def _loss(self, y, predictions):
        ys, outputs = self._per_output(y, predictions)
        terms = [
            weight * loss_fn(y_true, y_pred)
            for loss_fn, weight, y_true, y_pred in zip(self._losses, self._loss_weights, ys, outputs)
        ]
        regularization = list(self._keras_model.losses)
        return tf.add_n(terms + regularization) if len(terms) + len(regularization) > 1 else terms[0]

    def _per_output(self, y, predictions):
        if len(self._losses) == 1:
            return [y], [predictions]
        ys = tf.nest.flatten(y) if not isinstance(y, (list, tuple)) else list(y)
        outputs = list(predictions) if isinstance(predictions, (list, tuple)) else [predictions]
        if len(ys) != len(self._losses) or len(outputs) != len(self._losses):
            raise KerasModelError(
                f"{len(self._losses)} losses were given, but the batch has {len(ys)} label "
                f"tensors and the model {len(outputs)} outputs; give one loss per output"
            )
        return ys, outputs

    # Metrics ---------------------------------------------------------------
    def _name_metrics(self, keras_model):
        several = len(self._metrics_per_output) > 1
        output_names = list(getattr(keras_model, "output_names", None) or [])
        named = []
        for index, metrics in enumerate(self._metrics_per_output):
            prefix = ""
            if several:
                prefix = (output_names[index] if index < len(output_names) else f"output_{index}") + "/"
            for metric in metrics:
                named.append((prefix + metric.name, metric))
        names = [n for n, _ in named]
        clash = {"loss", "num_examples", "num_batches"} & set(names)
        if len(set(names)) != len(names) or clash:
            raise KerasModelError(
                f"metric names must be unique and not 'loss', 'num_examples' or 'num_batches'; "
                f"got {names}. Give each Keras metric a distinct name=..."
            )
        return named

    def report_local_unfinalized_metrics(self):
        result = collections.OrderedDict(
            loss=[self._loss_sum.read_value(), self._loss_count.read_value()],
            num_examples=[self._num_examples.read_value()],
            num_batches=[self._num_batches.read_value()],
        )
        for name, metric in self._named_metrics:
            result[name] = [tf.convert_to_tensor(v) for v in metric.variables]
        return result

    def metric_finalizers(self):
        result = collections.OrderedDict(
            loss=_mean_finalizer, num_examples=_sum_finalizer, num_batches=_sum_finalizer
        )
        for name, metric in self._named_metrics:
            result[name] = _metric_finalizer(metric)
        return result

    def reset_metrics(self):
        for variable in (self._loss_sum, self._loss_count, self._num_examples, self._num_batches):
            variable.assign(tf.zeros_like(variable))
        for _, metric in self._named_metrics:
            for variable in metric.variables:
                _tf_variable(variable).assign(tf.zeros_like(variable))


def _normalize_losses(loss, loss_weights):
    losses = list(loss) if isinstance(loss, (list, tuple)) else [loss]
    if not losses or not all(callable(fn) for fn in losses):
        raise KerasModelError(
            f"loss must be a callable (e.g. keras.losses.SparseCategoricalCrossentropy()) or a "
            f"list of them, one per output; got {loss!r}"
        )
    if loss_weights is None:
        weights = [1.0] * len(losses)
    else:
        weights = [float(w) for w in loss_weights]
        if len(weights) != len(losses):
            raise KerasModelError(
                f"loss_weights has {len(weights)} entries but there are {len(losses)} losses"
            )
    return losses, weights


def _normalize_metrics(metrics, num_outputs):
    if not metrics:
        return [[] for _ in range(num_outputs)]
    per_output = metrics if isinstance(metrics[0], (list, tuple)) else [metrics]
    if len(per_output) != num_outputs:
        raise KerasModelError(
            f"give metrics as one list per output: {num_outputs} outputs, "
            f"{len(per_output)} metric lists"
        )
    for group in per_output:
        for metric in group:
            if not isinstance(metric, keras.metrics.Metric):
                raise KerasModelError(
                    f"metrics must be keras.metrics.Metric instances, got {metric!r}; "
                    "e.g. keras.metrics.SparseCategoricalAccuracy()"
                )
    return [list(group) for group in per_output]


def _features_spec(input_spec):
    """The ``x`` part of an ``input_spec`` given as ``(x, y)`` or ``{'x': ..., 'y': ...}``."""
    if isinstance(input_spec, (tuple, list)) and len(input_spec) == 2:
        return input_spec[0]
    if isinstance(input_spec, collections.abc.Mapping) and {"x", "y"} <= set(input_spec):
        return input_spec["x"]
    raise KerasModelError(
        f"input_spec must describe a whole batch, (x_spec, y_spec) or {{'x': ..., 'y': ...}}, got "
        f"{input_spec!r}; e.g. (tf.TensorSpec([None, 60], tf.float32), tf.TensorSpec([None], tf.int32))"
    )


def _ensure_built(keras_model, input_spec):
    x_spec = _features_spec(input_spec)
    if keras_model.built and keras_model.variables:
        return
    keras_model(tf.nest.map_structure(lambda s: tf.zeros([1] + list(s.shape[1:]), s.dtype), x_spec))


def from_keras_model(
    keras_model: keras.Model,
    loss: Any,
    input_spec: Any,
    metrics: Optional[Sequence[Any]] = None,
    loss_weights: Optional[Sequence[float]] = None,
) -> KerasVariableModel:
    """Wraps an uncompiled Keras 3 model as a fedsim ``VariableModel``.

    Args:
      keras_model: a ``keras.Model`` (TensorFlow backend), built or buildable from ``input_spec``.
      loss: a Keras loss (callable ``(y_true, y_pred)``), or a list, one per output.
      input_spec: the batch structure, ``(x_spec, y_spec)`` or ``{'x': ..., 'y': ...}`` of
        ``tf.TensorSpec`` with the batch dimension first.
      metrics: Keras metric instances; for several outputs, one list per output.
      loss_weights: with several losses, the weight of each in the total loss.
    """
    if not isinstance(keras_model, keras.Model):
        raise KerasModelError(f"expected a keras.Model, got {type(keras_model).__name__}")
    return KerasVariableModel(keras_model, loss, input_spec, metrics, loss_weights)
