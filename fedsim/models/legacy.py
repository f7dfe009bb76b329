"""The older model interface: ``Model`` and ``TrainableModel`` (TFF 0.x, seeds 000 and 003).

These models report ``report_local_outputs()`` (any structure of tensors) and
aggregate them across the cohort with ``federated_output_computation``: a
callable over a :class:`fedsim.federated.ClientValues` written with fedsim's
federated operators (``federated_sum``, ``federated_mean``, ...). When a model
is a ``TrainableModel``, local training calls its own ``train_on_batch``.

They run under every algorithm unchanged: the engine adapts them to the
``VariableModel`` interface with :func:`as_variable_model`.
"""
from __future__ import annotations

import abc
import collections
from typing import Any, Callable, Optional

import tensorflow as tf

from fedsim.models.variable_model import BatchOutput, ModelVariables, VariableModel

FederatedOutputComputation = Callable[[Any], Any]


class Model(ModelVariables):
    """A model whose metrics are aggregated by its own ``federated_output_computation``.

    Its local variables are reset before each client (the older interface has
    no ``reset_metrics``), and ``forward_pass`` updates them.
    """

    @abc.abstractmethod
    def report_local_outputs(self) -> Any:
        """A structure of tensors aggregated over all ``forward_pass`` calls on this client."""

    @property
    @abc.abstractmethod
    def federated_output_computation(self) -> Optional[FederatedOutputComputation]:
        """Callable from client-placed local outputs to server values, or ``None``."""


class TrainableModel(Model):
    """A ``Model`` that trains itself one batch at a time (e.g. with its own optimizer)."""

    @abc.abstractmethod
    def train_on_batch(self, batch_input: Any) -> BatchOutput:
        """Like ``forward_pass``, but also updates the model variables."""


class LegacyModelAdapter(VariableModel):
    """Presents a ``Model`` through the ``VariableModel`` interface.

    A model that trains itself gets its own Keras optimizers' state listed among
    ``local_variables`` (built first, so it exists before tracing), so it is
    reset for every client; state it could carry otherwise is refused with a
    ``HiddenStateError`` (see :mod:`fedsim.models.own_optimizers`).

    ``report_local_unfinalized_metrics`` returns the model's local outputs under
    one key; the server does not sum-and-finalize them but hands the cohort's
    local outputs to the model's ``federated_output_computation`` (see
    :mod:`fedsim.metrics`). ``reset_metrics`` restores the local variables to
    their values when the adapter was built, because the old interface has no
    reset of its own.
    """

    LOCAL_OUTPUTS_KEY = "local_outputs"
    uses_federated_output_computation = True

    def __init__(self, model: Model):
        self.model = model
        # Captured eagerly once: the reset target for local variables.
        self._initial_local_values = [tf.identity(v) for v in model.local_variables]
        # A model that trains itself may step its own Keras optimizers: their state is
        # listed as local, so every client starts it afresh like any local variable.
        self._own_optimizer_state = _own_optimizers().own_optimizer_state(model) if self.trains_itself else []

    @property
    def trainable_variables(self):
        return list(self.model.trainable_variables)

    @property
    def non_trainable_variables(self):
        return list(self.model.non_trainable_variables)

    @property
    def local_variables(self):
        """The model's local variables, then the state of the Keras optimizers it trains itself with."""
        return list(self.model.local_variables) + self._own_optimizer_state

    @property
    def rng_state_variables(self):
        """The wrapped model's random-generator states, if it declares any (see ``fedsim.client.seeds``)."""
        return list(getattr(self.model, "rng_state_variables", ()))

    @property
    def input_spec(self):
        return self.model.input_spec

    @property
    def trains_itself(self) -> bool:
        """True when local training should call the model's own ``train_on_batch``."""
        return isinstance(self.model, TrainableModel) or callable(
            getattr(self.model, "train_on_batch", None)
        )

    def train_on_batch(self, batch_input):
        # A variable made here would escape every reset (e.g. an optimizer built in train_on_batch).
        with _own_optimizers().no_new_variables(self.model):
            return self.model.train_on_batch(batch_input)

    def forward_pass(self, batch_input, training=True):
        return self.model.forward_pass(batch_input, training=training)

    def predict_on_batch(self, batch_input, training=True):
        predict = getattr(self.model, "predict_on_batch", None)
        if predict is None:
            raise AttributeError(
                f"{type(self.model).__name__} is an older-interface Model without "
                "predict_on_batch; use forward_pass(...).predictions instead"
            )
        return predict(batch_input, training=training)

    def report_local_unfinalized_metrics(self):
        return collections.OrderedDict([(self.LOCAL_OUTPUTS_KEY, self.model.report_local_outputs())])

    def metric_finalizers(self):
        # Aggregation is the model's federated_output_computation, not sum-then-finalize.
        return collections.OrderedDict()

    def reset_metrics(self):
        for variable, value in zip(self.model.local_variables, self._initial_local_values):
            variable.assign(value)

    @property
    def federated_output_computation(self) -> Optional[FederatedOutputComputation]:
        return self.model.federated_output_computation


def _own_optimizers():
    # Imported when first needed: it reuses enhanced.py's walk, and enhanced.py imports this module.
    from fedsim.models import own_optimizers

    return own_optimizers


def as_variable_model(model: Any) -> VariableModel:
    """Returns ``model`` as a ``VariableModel``, adapting the older interface if needed."""
    if isinstance(model, VariableModel):
        return model
    if isinstance(model, Model) or hasattr(model, "report_local_outputs"):
        return LegacyModelAdapter(model)
    raise TypeError(
        f"expected a fedsim VariableModel or an older-interface Model, got {type(model).__name__}; "
        "wrap a Keras model with fedsim.from_keras_model(...)"
    )
