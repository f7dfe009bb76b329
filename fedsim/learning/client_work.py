"""Client work: one compiled function from (model weights, dataset) to a client's output.

The whole local loop, every batch of the client's dataset, runs inside one
``tf.function``: there is no Python between batches. The function is traced
once per dataset element spec and reused for every client, and it keeps no
state between clients (weights, optimizer state and metrics are reset at the
start), so any executor can run it anywhere and get the same answer.
"""
from __future__ import annotations

import collections
from typing import Any, Sequence

import attrs
import numpy as np
import tensorflow as tf

from fedsim.models.legacy import as_variable_model
from fedsim.models.model_weights import ModelWeights
from fedsim.optimizers import SGD


@attrs.frozen
class ClientOutput:
    """What one client sends back: its delta, how much it counts, and its unfinalized metrics.

    ``delta`` is trainable weights after local training minus before, one
    NumPy array per trainable variable. ``update_weight`` is the example count
    (weighted) or 1 (unweighted; 0 for a client with no examples, which must not count).
    """

    delta: list[np.ndarray]
    update_weight: float
    metrics: "collections.OrderedDict[str, Any]"
    num_examples: int


def _batch_size(batch: Any) -> tf.Tensor:
    return tf.shape(tf.nest.flatten(batch)[0])[0]


class ClientWork:
    """Local training of one model, compiled once and reused for every client.

    Args:
      model: a fedsim model (either interface, or enhanced); built once, reused.
      optimizer: a functional client optimizer (default ``SGD(0.01)``); ignored
        when the model trains itself with ``train_on_batch``.
      weighted: update weight is the client's example count (True) or 1 (False).
    """

    def __init__(self, model: Any, optimizer: Any = None, weighted: bool = True):
        self.model = as_variable_model(model)
        self.optimizer = optimizer if optimizer is not None else SGD(0.01)
        self.weighted = weighted
        self.trains_itself = bool(getattr(self.model, "trains_itself", False))
        self.trace_count = 0
        self._train = tf.function(self._train_graph)
        self._evaluate = tf.function(self._evaluate_graph)

    # Public ----------------------------------------------------------------
    def train(self, model_weights: ModelWeights, dataset: tf.data.Dataset) -> ClientOutput:
        """Trains from ``model_weights`` over the whole dataset and returns the client's output."""
        delta, num_examples, metrics = self._train(
            _as_tensors(model_weights.trainable), _as_tensors(model_weights.non_trainable), dataset
        )
        count = int(num_examples)
        if self.weighted:
            update_weight = float(count)
        else:
            update_weight = 1.0 if count > 0 else 0.0
        return ClientOutput(
            delta=[d.numpy() for d in delta],
            update_weight=update_weight,
            metrics=_metrics_to_numpy(metrics),
            num_examples=count,
        )

    def evaluate(self, model_weights: ModelWeights, dataset: tf.data.Dataset):
        """Unfinalized metrics of ``model_weights`` on the dataset (``training=False``)."""
        metrics = self._evaluate(
            _as_tensors(model_weights.trainable), _as_tensors(model_weights.non_trainable), dataset
        )
        return _metrics_to_numpy(metrics)

    # Graphs ----------------------------------------------------------------
    def _start_client(self, trainable: Sequence[tf.Tensor], non_trainable: Sequence[tf.Tensor]):
        for variable, value in zip(self.model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(self.model.non_trainable_variables, non_trainable):
            variable.assign(value)
        self.model.reset_metrics()

    def _train_graph(self, trainable, non_trainable, dataset):
        # Runs once per trace, not per call: this counts traces.
        self.trace_count += 1
        self._start_client(trainable, non_trainable)
        variables = self.model.trainable_variables
        num_examples = tf.constant(0, tf.int64)
        if self.trains_itself:
            for batch in dataset:
                output = self.model.train_on_batch(batch)
                num_examples += self._count(output, batch)
        else:
            optimizer_state = self.optimizer.init(list(trainable))
            for batch in dataset:
                with tf.GradientTape() as tape:
                    output = self.model.forward_pass(batch, training=True)
                gradient = tape.gradient(output.loss, variables)
                gradient = [tf.zeros_like(v) if g is None else g for v, g in zip(variables, gradient)]
                current = [v.read_value() for v in variables]
                optimizer_state, updated = self.optimizer.next(optimizer_state, current, gradient)
                for variable, value in zip(variables, updated):
                    variable.assign(value)
                num_examples += self._count(output, batch)
        delta = [v.read_value() - w for v, w in zip(variables, trainable)]
        return delta, num_examples, self.model.report_local_unfinalized_metrics()

    def _evaluate_graph(self, trainable, non_trainable, dataset):
        self._start_client(trainable, non_trainable)
        for batch in dataset:
            self.model.forward_pass(batch, training=False)
        return self.model.report_local_unfinalized_metrics()

    @staticmethod
    def _count(output: Any, batch: Any) -> tf.Tensor:
        count = getattr(output, "num_examples", None)
        if count is None:
            count = _batch_size(batch)
        return tf.cast(count, tf.int64)


def _as_tensors(arrays: Sequence[np.ndarray]) -> list[tf.Tensor]:
    return [tf.convert_to_tensor(a) for a in arrays]


def _metrics_to_numpy(metrics: Any) -> "collections.OrderedDict[str, Any]":
    return collections.OrderedDict(
        (name, tf.nest.map_structure(lambda t: np.asarray(t), value)) for name, value in metrics.items()
    )
