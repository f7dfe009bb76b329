"""One client's training step on a Keras model, as a pure function of tensors.

``ClientWork`` trains by assigning to the model's variables, which ties a
computation to one set of variables and so to one client at a time. Here the
same step is written statelessly (``keras.Model.stateless_call`` and
``Metric.stateless_update_state``): model weights, optimizer state and metric
state go in and come out, so ``tf.vectorized_map`` can run a whole cohort's
step as one batched computation, and the result is the sequential one.

Padding: a batch may carry padded examples (``mask`` 0). They get zero loss
weight, the mean loss divides by the real example count, and the metrics see
them with sample weight 0, so padding changes no result.
"""
from __future__ import annotations

import collections
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from fedsim.client.task import ClientTask
from fedsim.models.keras_model import KerasVariableModel

# Reductions whose per-example form we can reproduce exactly. Keras divides
# "sum_over_batch_size" by the number of loss values; with no sample weight,
# "mean_with_sample_weight" is the same.
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")
_SUM_REDUCTIONS = ("sum",)


def vectorization_blocker(client_work: Any) -> Optional[str]:
    """Why this client work cannot run statelessly, or ``None`` when it can."""
    model = client_work.model
    if not isinstance(model, KerasVariableModel):
        return f"the model is a {type(model).__name__}, not a from_keras_model model"
    if client_work.trains_itself:
        return "the model trains itself (train_on_batch)"
    if model.output_names is not None:
        return f"the model's outputs are named {model.output_names}; only unnamed outputs are vectorized"
    losses = model._losses  # noqa: SLF001  (KerasVariableModel has no public accessor yet)
    if len(losses) != 1:
        return f"the model has {len(losses)} losses; only single-output models are vectorized"
    loss = losses[0]
    if not isinstance(loss, keras.losses.Loss) or loss.reduction not in _MEAN_REDUCTIONS + _SUM_REDUCTIONS:
        return f"the loss {loss!r} is not a keras.losses.Loss with a mean or sum reduction"
    for name, metric in model._named_metrics:  # noqa: SLF001
        # Mean/Sum-based metrics treat sample weight 0 as "absent"; others must show it.
        if not isinstance(metric, (keras.metrics.Mean, keras.metrics.Sum)) and _counts_padding(metric, model):
            return (f"metric {name!r} ({type(metric).__name__}) changes its state on a padded example "
                    "(zero features and label, sample weight 0)")
    return None


def _counts_padding(metric: keras.metrics.Metric, model: KerasVariableModel) -> bool:
    """Whether a padded example, which the batched step feeds with sample weight 0, changes the metric."""
    start = metric.stateless_reset_state()
    after = metric.stateless_update_state(start, *model.zero_example, sample_weight=tf.zeros([1]))
    return any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(after, start))


class KerasClientStep:
    """The stateless pieces of one client's local training on a ``KerasVariableModel``.

    Args:
      model: the wrapped Keras model (its variables are never written).
      task: the ``ClientTask``: optimizer and objective hooks, applied as ``ClientWork`` applies them.
    """

    def __init__(self, model: KerasVariableModel, task: ClientTask):
        self._model = model
        self._keras_model = model.keras_model
        self._loss = model._losses[0]  # noqa: SLF001
        self._loss_weight = float(model._loss_weights[0])  # noqa: SLF001
        # Each metric with its own start state: the values its reset_state() sets, which need not be zero.
        self._metrics = [
            (name, metric, [np.asarray(v) for v in metric.stateless_reset_state()])
            for name, metric in model._named_metrics  # noqa: SLF001
        ]
        self.task = task
        self.optimizer = task.optimizer

    def start_non_trainable(self, non_trainable, rng_states=()) -> list:
        """The non-trainable list the step carries: model weights and one client's RNG states, in Keras's order."""
        return self._model.join_non_trainable(list(non_trainable), list(rng_states))

    def model_non_trainable(self, values) -> list:
        """The model weights among the non-trainable list the step carries (its RNG states left out)."""
        return self._model.split_non_trainable(list(values))[0]

    def initial_metric_state(self) -> "collections.OrderedDict[str, list[tf.Tensor]]":
        """Unfinalized metrics as ``reset_metrics`` leaves them.

        In the order ``report_local_unfinalized_metrics`` uses.
        """
        state = collections.OrderedDict(
            loss=[tf.zeros([], tf.float32), tf.zeros([], tf.float32)],
            num_examples=[tf.zeros([], tf.int64)],
            num_batches=[tf.zeros([], tf.int64)],
        )
        for name, _, start in self._metrics:
            state[name] = [tf.constant(v) for v in start]
        return state

    def loss_and_gradient(self, trainable, non_trainable, x, y, mask):
        """``(loss, gradient, new non-trainable, predictions, count)`` of one (padded) batch."""
        count = tf.reduce_sum(mask)
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            predictions, non_trainable, regularization = self._keras_model.stateless_call(
                trainable, non_trainable, x, training=True, return_losses=True
            )
            loss = self._loss_weight * self._masked_loss(y, predictions, mask, count)
            if regularization:
                loss = tf.add_n([loss] + list(regularization))
        gradient = tape.gradient(loss, trainable)
        gradient = [tf.zeros_like(w) if g is None else g for w, g in zip(trainable, gradient)]
        return loss, gradient, list(non_trainable), predictions, count

    def __call__(self, trainable, non_trainable, optimizer_state, metric_state, x, y, mask, start=None, offset=None):
        """One local step of one client on a (possibly padded) batch.

        ``start``: the weights the client started from (the proximal term's
        anchor); ``offset``: the client's gradient offset (``ClientInputs``).
        The hooks apply in ``ClientWork``'s order, so the arithmetic is the same.
        """
        loss, gradient, non_trainable, predictions, count = self.loss_and_gradient(
            trainable, non_trainable, x, y, mask)
        if self.task.proximal_mu:
            gradient = [g + self.task.proximal_mu * (w - w0) for g, w, w0 in zip(gradient, trainable, start)]
        if offset is not None:
            gradient = [g + c for g, c in zip(gradient, offset)]
        new_state, trainable = self.optimizer.next(optimizer_state, trainable, gradient)
        if not self.task.freeze_optimizer_state:
            optimizer_state = new_state
        metric_state = self._update_metrics(metric_state, loss, count, y, predictions, mask)
        return list(trainable), list(non_trainable), optimizer_state, metric_state

    def _masked_loss(self, y, predictions, mask, count):
        dtype = self._loss.dtype
        per_example = self._loss.call(tf.cast(y, dtype), tf.cast(predictions, dtype))
        weights = tf.reshape(tf.cast(mask, per_example.dtype), [-1] + [1] * (per_example.shape.rank - 1))
        total = tf.reduce_sum(per_example * weights)
        if self._loss.reduction in _SUM_REDUCTIONS:
            return total
        # Keras divides by every loss value of the batch; padded rows are not part of it.
        values_per_example = tf.cast(tf.reduce_prod(tf.shape(per_example)[1:]), total.dtype)
        return tf.math.divide_no_nan(total, tf.cast(count, total.dtype) * values_per_example)

    def _update_metrics(self, state, loss, count, y, predictions, mask):
        new = collections.OrderedDict()
        loss_sum, loss_count = state["loss"]
        new["loss"] = [loss_sum + tf.cast(loss, tf.float32) * count, loss_count + count]
        new["num_examples"] = [state["num_examples"][0] + tf.cast(count, tf.int64)]
        new["num_batches"] = [state["num_batches"][0] + 1]
        for name, metric, _ in self._metrics:
            values = metric.stateless_update_state(state[name], y, predictions, sample_weight=mask)
            new[name] = [tf.convert_to_tensor(v) for v in values]
        return new
