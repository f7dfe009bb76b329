"""``enhance(model)``: a wrapper that checks a model when it is built and on every batch.

Seed 001 (TFF's ``EnhancedModel`` / ``EnhancedTrainableModel``). Catching a
malformed model at the door beats a shape error deep inside a traced graph.

At ``enhance()`` time: the variable collections hold only variables, each
listed once; every variable the model holds is in a collection; the
``input_spec`` is ``tf.TensorSpec`` fields with a leading batch dimension;
metric names agree. On every batch: the batch has ``input_spec``'s structure,
shapes and dtypes; an eager ``forward_pass`` leaves the weights alone (see
``EnhancedModel.forward_pass``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import attrs
import numpy as np
import tensorflow as tf

from fedsim.client.seeds import rng_state_variables
from fedsim.models.held_variables import COLLECTIONS, held_variables, is_variable, variable_key, variable_name
from fedsim.models.legacy import LegacyModelAdapter, Model, as_variable_model
from fedsim.models.model_weights import ModelWeights
from fedsim.models.variable_model import BatchOutput, ModelVariables, VariableModel



class ModelCheckError(ValueError):
    """Raised by ``enhance`` when a model breaks the model interface's contract."""


@attrs.frozen
class WeightVariables:
    """A model's weights as its live variables, in the model's order (TFF's ``ModelWeights``).

    Assigning to one changes the model: ``model.weights.trainable[0].assign(value)``.
    For a NumPy copy, use ``EnhancedModel.weight_values``.
    """

    trainable: tuple[Any, ...] = attrs.field(converter=tuple)
    non_trainable: tuple[Any, ...] = attrs.field(converter=tuple)


# Variable collections ------------------------------------------------------
def _listed_variables(model: ModelVariables) -> dict[Any, str]:
    """Each listed variable's key -> its collection; every entry must be a distinct variable."""
    listed: dict[Any, str] = {}
    for collection in COLLECTIONS:
        for index, entry in enumerate(getattr(model, collection)):
            if not is_variable(entry):
                raise ModelCheckError(
                    f"{collection}[{index}] is not a variable (got {type(entry).__name__}); "
                    "list the tf.Variable itself (e.g. self._w, not self._w.read_value() or "
                    "tf.identity(self._w)), since training, resets and the server assign to it"
                )
            key = variable_key(entry)
            if listed.get(key) == collection:
                raise ModelCheckError(
                    f"variable {variable_name(entry)!r} is listed twice in {collection}; "
                    "list each variable once, or it gets two updates and two entries in the "
                    "model weights"
                )
            if key in listed:
                raise ModelCheckError(
                    f"variable {variable_name(entry)!r} appears in both {listed[key]} and "
                    f"{collection}; each variable must belong to exactly one collection"
                )
            listed[key] = collection
    return listed


def _check_every_variable_listed(model: Any, listed: dict[Any, str]) -> None:
    for where, variable in held_variables(model):
        if variable_key(variable) not in listed:
            raise ModelCheckError(
                f"variable {variable_name(variable)!r} (held by {where}) is in none of "
                f"{', '.join(COLLECTIONS)}; it would drift between clients, never be reset and "
                "never reach the server. List it: model weights in trainable_variables or "
                "non_trainable_variables, metric state in local_variables"
            )


def _check_rng_states_are_local(model: ModelVariables, listed: dict[Any, str]) -> None:
    for variable in rng_state_variables(model):
        if listed.get(variable_key(variable)) != "local_variables" or not tf.as_dtype(variable.dtype).is_integer:
            raise ModelCheckError(
                f"rng_state_variables holds {variable_name(variable)!r} ({tf.as_dtype(variable.dtype).name}, in "
                f"{listed.get(variable_key(variable), 'no collection')}); random-generator states must be integer "
                "variables listed in local_variables: each client starts them from its own seed, and "
                "they never reach the server"
            )


# input_spec and batches -----------------------------------------------------
def _field_name(path: tuple) -> str:
    return "/".join(str(p) for p in path) or "batch"


def _is_container(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple))


def _children(value: Any) -> Iterator[tuple[Any, Any]]:
    return iter(value.items()) if isinstance(value, Mapping) else enumerate(value)


def _leaves(structure: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """``(path, leaf)`` pairs of a structure of mappings, lists and tuples."""
    if not _is_container(structure):
        yield path, structure
        return
    for key, child in _children(structure):
        yield from _leaves(child, path + (key,))


def _check_input_spec(model: ModelVariables) -> None:
    spec = model.input_spec
    leaves = list(_leaves(spec))
    bad = [leaf for _, leaf in leaves if not isinstance(leaf, tf.TensorSpec)]
    if not leaves or bad:
        raise ModelCheckError(
            f"input_spec must be a nested structure of tf.TensorSpec, but it holds "
            f"{[type(b).__name__ for b in bad] or 'nothing'}: {spec!r}. Use e.g. "
            "(tf.TensorSpec([None, 60], tf.float32), tf.TensorSpec([None], tf.int32))"
        )
    for path, leaf in leaves:
        # The seed: "The tensors must include a batch dimension as the first
        # dimension, but the batch dimension may be undefined" (so a fixed size is allowed).
        if leaf.shape.rank is None or leaf.shape.rank == 0:
            raise ModelCheckError(
                f"input_spec field {_field_name(path)!r} has shape {leaf.shape}, with no batch "
                "dimension; every field needs the batch dimension first (None or a fixed size), "
                f"e.g. tf.TensorSpec([None], {leaf.dtype!r}) for one scalar per example"
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


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"{type(value).__name__} with keys {list(value)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _same_container(batch: Any, spec: Any) -> bool:
    """A mapping matches a mapping with the same keys; a list or tuple one of the same length."""
    if isinstance(spec, Mapping):
        return isinstance(batch, Mapping) and set(batch) == set(spec)
    if isinstance(spec, (list, tuple)):
        return isinstance(batch, (list, tuple)) and len(batch) == len(spec)
    return not _is_container(batch)


def _paired_leaves(batch: Any, spec: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any, Any]]:
    """``(path, batch value, spec)`` for every field of ``spec``, found by key or position."""
    if not _same_container(batch, spec):
        where = f" at field {_field_name(path)!r}" if path else ""
        raise ModelCheckError(
            f"the batch's structure does not match input_spec{where}: the batch has "
            f"{_describe(batch)}, input_spec has {_describe(spec)}; map the dataset so "
            "each element has input_spec's structure (a list may stand for a tuple, but a "
            "mapping needs a mapping with the same keys)"
        )
    if not _is_container(spec):
        yield path, batch, spec
        return
    for key, child_spec in _children(spec):
        yield from _paired_leaves(batch[key], child_spec, path + (key,))


def check_batch(batch_input: Any, input_spec: Any) -> None:
    """Raises ``ModelCheckError`` naming the field when a batch does not fit ``input_spec``.

    Containers must match in kind: a mapping needs a mapping with the same keys
    (any order or mapping type), a tuple or list a tuple or list of the same
    length (tf.data yields tuples where a spec may be written as a list).
    """
    for path, value, spec in _paired_leaves(batch_input, input_spec):
        tensor = tf.convert_to_tensor(value)
        if tensor.dtype != spec.dtype or not spec.shape.is_compatible_with(tensor.shape):
            raise ModelCheckError(
                f"batch field {_field_name(path)!r} has shape {tensor.shape} and dtype "
                f"{tensor.dtype.name}, which does not fit the input_spec {spec}; reshape or cast "
                "the dataset (e.g. with dataset.map) to match"
            )


# forward_pass and weights ---------------------------------------------------
def _snapshot(variables: list) -> list[np.ndarray]:
    # Copied: a read may share the variable's buffer, which an in-place update changes.
    return [np.array(v.numpy(), copy=True) for v in variables]


def _write_message(kind: str, variable: Any, training: Any) -> str:
    """Why ``forward_pass`` must not have written ``variable``, and what to do instead."""
    if kind == "trainable":
        consequence = "it would silently become part of the client's model update"
    else:
        consequence = (
            "it would be silently discarded; only updated statistics such as BatchNorm "
            "moving averages may change, and only with training=True"
        )
    return (
        f"forward_pass(training={training}) changed {kind} variable "
        f"{variable_name(variable)!r}: {consequence}. forward_pass must leave the model "
        "weights to the training loop (or train_on_batch); keep per-batch state such as "
        "metrics in local_variables"
    )


def _check_unchanged(kind: str, variables: list, before: list[np.ndarray], training: bool) -> None:
    for variable, value in zip(variables, before):
        # equal_nan: a NaN weight that stays NaN was not written.
        if not np.array_equal(value, variable.numpy(), equal_nan=True):
            raise ModelCheckError(_write_message(kind, variable, training))


def _assert_unchanged(kind: str, variables: list, before: list, training: Any) -> None:
    """``_check_unchanged`` inside a traced function: an assertion op per variable, run with the graph.

    The reads before and after ``forward_pass`` touch the same resources as
    its writes, so automatic control dependencies keep them in program order.
    """
    for variable, value in zip(variables, before):
        after = variable.read_value()
        same = tf.equal(after, value)
        if after.dtype.is_floating:  # a NaN weight that stays NaN was not written
            same = same | (tf.math.is_nan(after) & tf.math.is_nan(value))
        tf.debugging.Assert(tf.reduce_all(same), [_write_message(kind, variable, training)])


class EnhancedModel(VariableModel):
    """A checked model: the wrapped model's interface plus sanity checks and ``.weights``."""

    def __init__(self, model: Any):
        self._original = model
        self._model = as_variable_model(model)
        listed = _listed_variables(self._model)
        _check_every_variable_listed(model, listed)
        _check_rng_states_are_local(self._model, listed)
        _check_input_spec(self._model)
        _check_metric_names(self._model)

    @property
    def wrapped(self) -> Any:
        """The model that was enhanced."""
        return self._original

    @property
    def weights(self) -> WeightVariables:
        """The trainable and non-trainable variables themselves; assigning changes the model."""
        return WeightVariables(self.trainable_variables, self.non_trainable_variables)

    @property
    def weight_values(self) -> ModelWeights:
        """A NumPy copy of the current weights, as a ``ModelWeights`` value."""
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
    def rng_state_variables(self):
        return rng_state_variables(self._model)

    @property
    def input_spec(self):
        return self._model.input_spec

    def forward_pass(self, batch_input, training=True):
        """The wrapped ``forward_pass`` after ``check_batch``; eagerly, it must leave the weights.

        Rule: trainable variables must not change; non-trainable ones must not
        change with ``training=False``. With ``training=True`` they may, as
        updated-not-learned statistics (the seed's BatchNorm exception).
        Eagerly, a write raises ``ModelCheckError``; inside a ``tf.function``
        (the client loop), an assertion in the graph fails the client with the
        same message (an ``InvalidArgumentError``, reported as the client's failure).
        """
        check_batch(batch_input, self.input_spec)
        guarded = [("trainable", list(self.trainable_variables))]
        if training is False:  # a tensor-valued training flag guards the trainable ones only
            guarded.append(("non-trainable", list(self.non_trainable_variables)))
        eager = tf.executing_eagerly()
        before = [
            _snapshot(variables) if eager else [tf.identity(v.read_value()) for v in variables]
            for _, variables in guarded
        ]
        output = self._model.forward_pass(batch_input, training=training)
        check = _check_unchanged if eager else _assert_unchanged
        for (kind, variables), values in zip(guarded, before):
            check(kind, variables, values, training)
        return _check_output(output, "forward_pass")

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
