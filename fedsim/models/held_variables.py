"""How fedsim finds a model's variables: each variable's identity, and every variable a model object holds.

Shared by ``enhance()`` (every held variable must be listed in a collection)
and ``own_optimizers`` (the state of a model's own optimizers).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import keras
import tensorflow as tf

from fedsim.models.variable_model import ModelVariables

COLLECTIONS = ("trainable_variables", "non_trainable_variables", "local_variables")


def variable_name(variable: Any) -> str:
    return getattr(variable, "path", None) or getattr(variable, "name", repr(variable))


def is_variable(value: Any) -> bool:
    return isinstance(value, (tf.Variable, keras.Variable))


def variable_key(variable: Any) -> Any:
    # A Keras 3 variable wraps a tf.Variable: both spellings are one variable.
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.ref()


def reached_objects(root: Any) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for ``root`` and every object reached from it.

    Follows the attributes of the root and of the fedsim models and
    ``tf.Module`` objects it holds, and lists, tuples and mappings (see
    ``followed_attributes``). Variables, Keras layers and metrics are reached but not
    entered (their state is their ``.variables``, Dropout's seed-generator
    state included); nothing else is entered: not optimizers (their state is
    the optimizer's, see ``own_optimizers``), nor e.g. ``tf.function``
    objects, whose traced graphs capture variables the model does not own.
    """
    stack = [(type(root).__name__, root)]
    seen: set[int] = set()
    while stack:
        where, value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        yield where, value
        if not is_variable(value) and not isinstance(value, (keras.Layer, keras.metrics.Metric)):
            # Reversed onto the stack, so the first attribute is reported first.
            stack.extend(reversed(list(followed_attributes(value, where, is_root=value is root))))


def held_variables(model: Any) -> Iterator[tuple[str, Any]]:
    """``(where, variable)`` for every variable the model object holds (see ``reached_objects``)."""
    for where, value in reached_objects(model):
        if is_variable(value):
            yield where, value
        elif isinstance(value, (keras.Layer, keras.metrics.Metric)):
            yield from ((where, variable) for variable in value.variables)


def followed_attributes(value: Any, where: str, is_root: bool) -> Iterator[tuple[str, Any]]:
    """The ``(where, child)`` pairs ``held_variables`` follows from ``value``."""
    if isinstance(value, Mapping):
        yield from ((f"{where}[{key!r}]", child) for key, child in value.items())
    elif isinstance(value, (list, tuple)):
        yield from ((f"{where}[{index}]", child) for index, child in enumerate(value))
    elif is_root or isinstance(value, (ModelVariables, tf.Module)):
        # tf.Module's bookkeeping lists repeat its attributes under other names.
        ignored = getattr(value, "_TF_MODULE_IGNORED_PROPERTIES", frozenset())
        for name, child in getattr(value, "__dict__", {}).items():
            if name not in ignored:
                yield f"{where}.{name}", child
