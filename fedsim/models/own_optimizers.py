"""A model that trains itself: its own optimizers' state is local state, reset for every client.

An older-interface ``TrainableModel`` steps its own optimizer in
``train_on_batch``. That optimizer's state (momentum buffers, iteration count)
belongs to no variable collection, so nothing would reset it: each client would
start from the previous client's momentum, and the model would depend on the
order of the cohort. ``LegacyModelAdapter`` therefore calls
:func:`own_optimizer_state` when it wraps such a model:

- every Keras optimizer the model holds (an attribute, or in a list, mapping,
  ``tf.Module`` or fedsim model it holds; or a held Keras model's compiled
  ``optimizer``) is built against the model's trainable variables, so its slot
  variables and iteration counter exist before any tracing, and its variables
  are returned to be listed among the adapter's ``local_variables``, which
  ``ClientWork`` resets at the start of every client, on every executor;
- any other state ``train_on_batch`` could carry from client to client is
  refused with a :class:`HiddenStateError` that says how to write it: a variable
  held by the model (directly, or inside some other object, e.g. a hand-written
  optimizer) that is in no collection, or a variable ``train_on_batch`` creates
  (e.g. an optimizer built inside it; found by tracing it once on ``input_spec``).

The walk over what a model holds is ``fedsim.models.enhanced``'s (the one
``enhance()`` uses for "every held variable is listed"): the same children are
followed, so the two checks agree on what a model holds.
"""
from __future__ import annotations

import contextlib
import types
import weakref
from typing import Any, Iterator, Optional

import keras
import tensorflow as tf

from fedsim.models.enhanced import ModelCheckError
from fedsim.models.held_variables import (
    COLLECTIONS,
    followed_attributes,
    held_variables,
    is_variable,
    reached_objects,
    variable_key,
    variable_name,
)

_HOW_TO_WRITE_IT = (
    "hold the optimizer as an attribute of the model, created in __init__: a "
    "keras.optimizers.Optimizer (fedsim builds it and resets its state for every client), "
    "or any other object whose variables the model lists in local_variables"
)

# Held objects whose attributes are not model state: code, types, data pipelines and
# graphs (a tf.function's traced graph captures variables the model does not own).
_NOT_STATE = (
    type,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.ModuleType,
    tf.types.experimental.GenericFunction,
    tf.data.Dataset,
    tf.Graph,
    tf.TypeSpec,
)


class HiddenStateError(ModelCheckError):
    """A model that trains itself holds state fedsim cannot find, so cannot reset for each client."""


def own_optimizer_state(model: Any) -> list:
    """The variables of ``model``'s own Keras optimizers that it does not list; checks nothing else is hidden.

    Builds every unbuilt Keras optimizer the model holds against
    ``model.trainable_variables``. Raises ``HiddenStateError`` when
    ``train_on_batch`` could carry other state from one client to the next.
    """
    listed = _listed_keys(model)
    optimizers = held_optimizers(model)
    trainable = list(model.trainable_variables)
    state = []
    for _, optimizer in optimizers:
        if not optimizer.built:
            optimizer.build(trainable)
        for variable in optimizer.variables:
            if variable_key(variable) not in listed:
                listed.add(variable_key(variable))
                state.append(variable)
    _check_no_hidden_variables(model, listed)
    _check_train_on_batch_creates_nothing(model)
    return state


def held_optimizers(model: Any) -> list[tuple[str, keras.optimizers.Optimizer]]:
    """``(where, optimizer)`` for every Keras optimizer the model holds, once each, in attribute order."""
    found: dict[int, tuple[str, keras.optimizers.Optimizer]] = {}
    for where, value in reached_objects(model):
        if isinstance(value, keras.Model):  # a compiled Keras model holds its optimizer
            where, value = f"{where}.optimizer", getattr(value, "optimizer", None)
        if isinstance(value, keras.optimizers.Optimizer):
            found.setdefault(id(value), (where, value))  # it may also be held directly
    return list(found.values())


@contextlib.contextmanager
def no_new_variables(model: Any, refusals: Optional[list] = None) -> Iterator[None]:
    """Raises ``HiddenStateError`` when the body creates a variable, appending it to ``refusals``.

    Active while tracing or running eagerly (a traced graph creates no
    variables). ``refusals`` keeps the error as raised: a ``tf.function`` the
    model's own method is wrapped in re-raises it as another type.
    """

    def refuse(next_creator, **kwargs):
        del next_creator  # never created: creating it is the error
        name = kwargs.get("name") or "(unnamed)"
        error = HiddenStateError(
            f"{type(model).__name__}.train_on_batch creates variable {name!r} (e.g. a Keras "
            "optimizer made inside it): a traced train_on_batch makes it once, and from then on "
            "it carries its state from client to client where fedsim cannot reset it (and "
            f"TensorFlow refuses to make it again when it retraces); {_HOW_TO_WRITE_IT}"
        )
        if refusals is not None:
            refusals.append(error)
        raise error

    with tf.variable_creator_scope(refuse):
        yield


# The walk ------------------------------------------------------------------
def _listed_keys(model: Any) -> set:
    return {
        variable_key(entry)
        for collection in COLLECTIONS
        for entry in getattr(model, collection)
        if is_variable(entry)
    }


def _opaque_objects(model: Any) -> Iterator[tuple[str, Any]]:
    """Held objects where the walk stops without looking inside, and that may hold state of their own.

    E.g. a hand-written optimizer: a plain object the walk does not enter, so
    ``enhance()`` does not see its variables either.
    """
    for where, value in reached_objects(model):
        if value is model or is_variable(value) or isinstance(value, _NOT_STATE):
            continue
        if isinstance(value, (keras.Layer, keras.metrics.Metric, keras.optimizers.Optimizer)):
            continue  # their state is found: .variables, or an adopted optimizer's
        # No children: followed_attributes enters nothing (containers and modules were entered).
        if hasattr(value, "__dict__") and not any(True for _ in followed_attributes(value, where, is_root=False)):
            yield where, value


def _state_of(holder: Any) -> Iterator[tuple[str, Any]]:
    """``(where, variable)`` for the variables ``holder`` holds, its Keras optimizers' included."""
    yield from held_variables(holder)
    for where, optimizer in held_optimizers(holder):
        yield from ((where, variable) for variable in optimizer.variables)


def _check_no_hidden_variables(model: Any, listed: set) -> None:
    """Every variable the model holds, directly or inside another object, is listed or adopted."""
    holders = [(type(model).__name__, model)] + list(_opaque_objects(model))
    for holder_where, holder in holders:
        for where, variable in _state_of(holder):
            if variable_key(variable) in listed:
                continue
            # ``where`` starts at the holder's type name: start it at the holder's place instead.
            place = holder_where + where[len(type(holder).__name__):]
            if holder is not model:
                place += f" (inside a {type(holder).__name__}, an object fedsim does not look into)"
            raise HiddenStateError(
                f"variable {variable_name(variable)!r}, held by {place}, is in none of "
                f"{', '.join(COLLECTIONS)} and belongs to no Keras optimizer the model holds: "
                "fedsim cannot reset it, so train_on_batch would carry it from one client to the "
                f"next and the model would depend on the order of the cohort. To train with an "
                f"optimizer, {_HOW_TO_WRITE_IT}; other per-client state goes in local_variables"
            )


# Tracing train_on_batch once ------------------------------------------------
# Models whose train_on_batch was traced: as_variable_model wraps one model several times.
_TRACED: weakref.WeakSet[Any] = weakref.WeakSet()


def _check_train_on_batch_creates_nothing(model: Any) -> None:
    """Traces ``train_on_batch`` on ``input_spec`` (nothing runs) and refuses it if it creates a variable.

    Only our refusal is raised here: a model that fails to trace for another
    reason fails the same way when a client trains, with its own error there.
    """
    try:
        if model in _TRACED:
            return
    except TypeError:  # unhashable or not weakly referable: trace every time
        pass
    refusals: list[HiddenStateError] = []

    def train_on_batch(batch):
        with no_new_variables(model, refusals):
            return model.train_on_batch(batch)

    try:
        tf.function(train_on_batch).get_concrete_function(model.input_spec)
    except Exception:  # noqa: BLE001 - see the docstring
        if refusals:
            raise refusals[0] from None
    with contextlib.suppress(TypeError):
        _TRACED.add(model)
