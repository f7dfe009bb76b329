"""``from_keras_model``: wraps an uncompiled Keras 3 model as a ``VariableModel``."""
from __future__ import annotations

import collections
from typing import Any, Optional, Sequence

import keras
import tensorflow as tf

from fedsim.models.keras_metrics import (
    build_metric, mean_finalizer, metric_finalizer, sum_finalizer, warn_non_zero_starts,
)
from fedsim.models.keras_outputs import (
    KerasModelError,
    check_named_labels,
    named_loss_weights,
    named_losses,
    named_metrics,
    normalize_losses,
    normalize_metrics,
)
from fedsim.models.variable_model import BatchOutput, VariableModel


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


class KerasVariableModel(VariableModel):
    """A Keras 3 model (TensorFlow backend) seen through the ``VariableModel`` interface.

    Outputs: one tensor, a list of them (losses and metrics given as lists,
    one per output), or a dict of named outputs (losses, loss weights and
    metrics given as dicts keyed by output name, as Keras's ``compile`` takes
    them; labels are then a dict with the same keys). The total loss is the
    weighted sum of the outputs' losses plus the model's regularization
    losses, as Keras computes it.

    Metrics: ``loss`` (the example-weighted mean loss), ``num_examples``,
    ``num_batches``, then each Keras metric by its name (``output_name/metric``
    for models with several or named outputs). Unfinalized values are the
    metrics' state variables; finalizers run the Keras metric's own
    ``result()``. Metrics that create their variables at their first update
    (``keras.metrics.AUC(multi_label=True)``) are built when the model is
    wrapped, by one update on a zero example with sample weight 0.

    Random generators: the seed-generator states of layers that draw random
    numbers (Dropout, GaussianNoise, random augmentation) are local variables
    (``rng_state_variables``), not model weights: the server never sends them,
    and every client starts them from its own seed (``fedsim.client.seeds``).

    Each client starts every metric from the metric's own ``reset_state()``,
    which need not be zero. Across clients, unfinalized values are summed
    (sum-then-finalize, TFF's contract for Keras metrics) whatever the metric:
    for a metric whose reset state is not zero (a running minimum starting at
    +inf) the cohort value is not its value over the pooled examples, so
    wrapping one warns.
    """

    def __init__(
        self,
        keras_model: keras.Model,
        loss: Any,
        input_spec: Any,
        metrics: Any = None,
        loss_weights: Any = None,
    ):
        self._keras_model = keras_model
        self._input_spec = input_spec
        x_spec, y_spec = _batch_specs(input_spec)
        # One call on a zero example builds the model and shows its output
        # structure; the example also builds lazily built metrics.
        predictions = keras_model(_zeros_for(x_spec), training=False)
        named = isinstance(predictions, collections.abc.Mapping)
        self._output_names = sorted(predictions) if named else None
        if self._output_names is None:
            self._losses, self._loss_weights = normalize_losses(loss, loss_weights)
            self._metrics_per_output = normalize_metrics(metrics, len(self._losses))
        else:
            names = self._output_names
            self._losses = named_losses(loss, names)
            self._loss_weights = named_loss_weights(loss_weights, self._losses, names)
            self._metrics_per_output = named_metrics(metrics, names)
            check_named_labels(y_spec, names, self._losses, self._metrics_per_output)
        self._zero_example = (_zeros_for(y_spec), predictions)

        self._loss_sum = tf.Variable(0.0, trainable=False, name="loss_sum")
        self._loss_count = tf.Variable(0.0, trainable=False, name="loss_count")
        self._num_examples = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_examples")
        self._num_batches = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_batches")
        self._named_metrics = self._name_metrics(keras_model)
        self._rng_positions = _seed_state_positions(keras_model)
        self._build_metrics()
        self.reset_metrics()
        warn_non_zero_starts(self._named_metrics)

    # Variables -------------------------------------------------------------
    @property
    def keras_model(self) -> keras.Model:
        return self._keras_model

    @property
    def trainable_variables(self):
        return [_tf_variable(v) for v in self._keras_model.trainable_variables]

    @property
    def non_trainable_variables(self):
        weights, _ = self.split_non_trainable(self._keras_model.non_trainable_variables)
        return [_tf_variable(v) for v in weights]

    @property
    def local_variables(self):
        own = [self._loss_sum, self._loss_count, self._num_examples, self._num_batches]
        metrics = [_tf_variable(v) for _, m in self._named_metrics for v in m.variables]
        return own + metrics + self.rng_state_variables

    @property
    def rng_state_variables(self) -> list[tf.Variable]:
        """The seed-generator states of the layers that draw random numbers, in Keras's order."""
        _, states = self.split_non_trainable(self._keras_model.non_trainable_variables)
        return [_tf_variable(v) for v in states]

    def split_non_trainable(self, values: Sequence[Any]) -> tuple[list, list]:
        """Keras's non-trainable list (as ``stateless_call`` takes it) -> (model weights, RNG states)."""
        rng = set(self._rng_positions)
        return (
            [v for i, v in enumerate(values) if i not in rng],
            [v for i, v in enumerate(values) if i in rng],
        )

    def join_non_trainable(self, weights: Sequence[Any], rng_states: Sequence[Any]) -> list:
        """The inverse of ``split_non_trainable``: Keras's non-trainable list."""
        weights, rng_states, rng = iter(weights), iter(rng_states), set(self._rng_positions)
        total = len(self._keras_model.non_trainable_variables)
        return [next(rng_states) if i in rng else next(weights) for i in range(total)]

    @property
    def input_spec(self):
        return self._input_spec

    @property
    def output_names(self) -> Optional[list[str]]:
        """The keys of the model's named (dict) outputs, sorted; ``None`` for unnamed outputs."""
        return self._output_names

    @property
    def zero_example(self) -> tuple[Any, Any]:
        """``(labels, predictions)`` of one example whose features and labels are all zeros.

        It is what a zero-padded example looks like to a metric; with sample
        weight 0 it builds metrics without changing their state.
        """
        return self._zero_example

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
            if loss_fn is not None  # a named output may have metrics but no loss
        ]
        regularization = list(self._keras_model.losses)
        return tf.add_n(terms + regularization) if len(terms) + len(regularization) > 1 else terms[0]

    def _per_output(self, y, predictions):
        if self._output_names is not None:
            return self._named_per_output(y, predictions)
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

    def _named_per_output(self, y, predictions):
        if not isinstance(y, collections.abc.Mapping):
            raise KerasModelError(
                f"the model's outputs are named {self._output_names}: labels must be a dict keyed by "
                f"these names, got {type(y).__name__}"
            )
        # Outputs with neither loss nor metrics need no labels (None).
        names = self._output_names
        return [y.get(name) for name in names], [predictions[name] for name in names]

    # Metrics ---------------------------------------------------------------
    def _name_metrics(self, keras_model):
        if self._output_names is not None:
            prefixes = [name + "/" for name in self._output_names]
        elif len(self._metrics_per_output) > 1:
            output_names = list(getattr(keras_model, "output_names", None) or [])
            prefixes = [
                (output_names[index] if index < len(output_names) else f"output_{index}") + "/"
                for index in range(len(self._metrics_per_output))
            ]
        else:
            prefixes = [""]
        named = [
            (prefix + metric.name, metric)
            for prefix, metrics in zip(prefixes, self._metrics_per_output)
            for metric in metrics
        ]
        names = [n for n, _ in named]
        clash = {"loss", "num_examples", "num_batches"} & set(names)
        if len(set(names)) != len(names) or clash:
            raise KerasModelError(
                f"metric names must be unique and not 'loss', 'num_examples' or 'num_batches'; "
                f"got {names}. Give each Keras metric a distinct name=..."
            )
        return named

    def _build_metrics(self):
        """Builds the metrics that create their variables at their first update."""
        ys, outputs = self._per_output(*self._zero_example)
        for metrics, y_true, y_pred in zip(self._metrics_per_output, ys, outputs):
            for metric in metrics:
                if not metric.variables:
                    build_metric(metric, y_true, y_pred)

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
            loss=mean_finalizer, num_examples=sum_finalizer, num_batches=sum_finalizer
        )
        for name, metric in self._named_metrics:
            result[name] = metric_finalizer(metric)
        return result

    def reset_metrics(self):
        for variable in (self._loss_sum, self._loss_count, self._num_examples, self._num_batches):
            variable.assign(tf.zeros_like(variable))
        for _, metric in self._named_metrics:
            metric.reset_state()  # the metric's own initial state, not necessarily zeros


def _seed_state_positions(keras_model: keras.Model) -> list[int]:
    """Where the layers' seed-generator states sit in the model's non-trainable variables."""
    states = {
        id(generator.state)
        for layer in keras_model._flatten_layers()  # noqa: SLF001  (Keras's own layer walk)
        for generator in getattr(layer, "_seed_generators", ())
    }
    return [i for i, v in enumerate(keras_model.non_trainable_variables) if id(v) in states]


def _batch_specs(input_spec):
    """``(x_spec, y_spec)`` of an ``input_spec`` given as ``(x, y)`` or ``{'x': ..., 'y': ...}``."""
    if isinstance(input_spec, (tuple, list)) and len(input_spec) == 2:
        return input_spec[0], input_spec[1]
    if isinstance(input_spec, collections.abc.Mapping) and {"x", "y"} <= set(input_spec):
        return input_spec["x"], input_spec["y"]
    raise KerasModelError(
        f"input_spec must describe a whole batch, (x_spec, y_spec) or {{'x': ..., 'y': ...}}, got "
        f"{input_spec!r}; e.g. (tf.TensorSpec([None, 60], tf.float32), tf.TensorSpec([None], tf.int32))"
    )


def _zeros_for(spec):
    """One example of zeros per ``TensorSpec`` (unknown dimensions taken as 1)."""
    return tf.nest.map_structure(
        lambda s: tf.zeros([1] + [d or 1 for d in s.shape[1:]], s.dtype), spec
    )


def from_keras_model(
    keras_model: keras.Model,
    loss: Any,
    input_spec: Any,
    metrics: Any = None,
    loss_weights: Any = None,
) -> KerasVariableModel:
    """Wraps an uncompiled Keras 3 model as a fedsim ``VariableModel``.

    Args:
      keras_model: a ``keras.Model`` (TensorFlow backend), built or buildable from ``input_spec``.
      loss: a Keras loss (callable ``(y_true, y_pred)``), or a list, one per output; for a
        model with named (dict) outputs, a dict keyed by output name (outputs left out have
        no loss) or one loss for every output.
      input_spec: the batch structure, ``(x_spec, y_spec)`` or ``{'x': ..., 'y': ...}`` of
        ``tf.TensorSpec`` with the batch dimension first; for named outputs, ``y_spec`` is a
        dict keyed by output name.
      metrics: Keras metric instances; for several outputs, one list per output; for named
        outputs, a dict from output name to a metric or a list of metrics.
      loss_weights: with several losses, the weight of each in the total loss: a list, or for
        named outputs a dict (outputs it leaves out weigh 1).
    """
    if not isinstance(keras_model, keras.Model):
        raise KerasModelError(f"expected a keras.Model, got {type(keras_model).__name__}")
    return KerasVariableModel(keras_model, loss, input_spec, metrics, loss_weights)
