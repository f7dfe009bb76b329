"""The current model interface: ``VariableModel`` (TFF's ``tff.learning.models.VariableModel``).

A model is a set of ``tf.Variable`` objects plus methods that are traced into
TensorFlow graphs. The engine never inspects a model beyond this interface, so
any model that implements it (hand-written, Keras, ...) runs under every
algorithm.
"""
from __future__ import annotations

import abc
import collections
from typing import Any, Callable

import attrs
import tensorflow as tf


@attrs.frozen
class BatchOutput:
    """What ``forward_pass`` returns for one batch.

    ``loss`` is a scalar tensor (required to train); ``predictions`` the model's
    outputs; ``num_examples`` the number of examples in the batch (an int32
    scalar tensor). ``tf.nest`` understands attrs classes, so a ``BatchOutput``
    can cross ``tf.function`` boundaries.
    """

    loss: Any = None
    predictions: Any = None
    num_examples: Any = None


MetricFinalizer = Callable[[Any], Any]


class ModelVariables(abc.ABC):
    """What both model interfaces share: three disjoint variable collections,
    the batch's ``input_spec`` and ``forward_pass``.

    Trainable and non-trainable variables make up the model weights that the
    server sends; local variables (e.g. metric accumulators) never leave the
    client. All variables are created in ``__init__``; methods must be
    traceable by ``tf.function``.
    """

    @property
    @abc.abstractmethod
    def trainable_variables(self) -> list[tf.Variable]:
        """Variables trained by gradient methods."""

    @property
    @abc.abstractmethod
    def non_trainable_variables(self) -> list[tf.Variable]:
        """Model weights that are not trained (e.g. frozen layers, BatchNorm statistics)."""

    @property
    @abc.abstractmethod
    def local_variables(self) -> list[tf.Variable]:
        """Client-local variables, such as metric state; never sent to the server."""

    @property
    @abc.abstractmethod
    def input_spec(self) -> Any:
        """A nested structure of ``tf.TensorSpec`` matching one ``batch_input``.

        Tensors include the batch dimension first; it may be ``None``.
        """

    @abc.abstractmethod
    def forward_pass(self, batch_input: Any, training: bool = True) -> BatchOutput:
        """Runs the model on a batch, updates metric state, and returns a ``BatchOutput``.

        Must not change the model weights (training loops do that), except
        updated-not-learned statistics such as BatchNorm moving averages.
        """


class VariableModel(ModelVariables):
    """A model for federated learning built from ``tf.Variable`` objects (the current interface).

    Beyond the shared variables and ``forward_pass``, it reports unfinalized
    metrics and their finalizers, which the server sums then finalizes.
    """

    @abc.abstractmethod
    def predict_on_batch(self, batch_input: Any, training: bool = True) -> Any:
        """Returns the model's predictions for ``batch_input`` (features only), no metrics."""

    @abc.abstractmethod
    def report_local_unfinalized_metrics(self) -> "collections.OrderedDict[str, Any]":
        """Metric name -> unfinalized values (e.g. ``[total, count]``) since the last reset."""

    @abc.abstractmethod
    def metric_finalizers(self) -> "collections.OrderedDict[str, MetricFinalizer]":
        """Metric name -> function from summed unfinalized values to the final metric value.

        The names are exactly those of ``report_local_unfinalized_metrics``.
        """

    @abc.abstractmethod
    def reset_metrics(self) -> None:
        """Resets every metric's state to its initial value."""
