"""Compiled client functions that trace afresh after a first trace that raised.

TensorFlow (2.21) mishandles a ``tf.function`` whose first trace raises after
creating a variable (a Keras optimizer built inside a ``@tf.function``
``train_on_batch``, for instance): ``Function._initialize`` has recorded the
created variables but not yet the tracing options of later calls, so every
later call takes the "variables were created" branch of ``Function._call``
with no options, and traces TensorFlow's placeholder function
(``TracingOptions.python_function``, ``lambda *args, **kwargs: None``). The
function then does nothing and returns ``None``, without an error: every later
client, a retried one included, would "succeed" without training (a zero delta,
no forward pass, zero examples in the model's own counters), or fail with an
unrelated error about ``None``.

``ClientFunction`` keeps fedsim's own compiled functions and the model's out
of that state, so a retried client traces its work again: it fails the same
way, or trains for real if the failure was passing.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator

import tensorflow as tf

_FUNCTION = tf.types.experimental.PolymorphicFunction


class ClientFunction:
    """``tf.function(python_function)`` that a failed first trace does not leave a no-op.

    After a call that raised: rebuilt if no trace had completed, and every
    tf.function of ``model`` that the failed trace left a no-op is reset.
    """

    def __init__(self, python_function: Callable[..., Any], model: Any, **options: Any):
        self._python_function = python_function
        self._model = model
        self._options = options  # tf.function's own, e.g. reduce_retracing
        self._function = tf.function(python_function, **options)

    def __call__(self, *args: Any) -> Any:
        try:
            return self._function(*args)
        except Exception:
            if self._function.experimental_get_tracing_count() == 0:
                # No trace completed: a fresh tf.function, never one TensorFlow left a no-op.
                self._function = tf.function(self._python_function, **self._options)
            reset_failed_first_traces(self._model)
            raise


def reset_failed_first_traces(model: Any) -> int:
    """Resets each tf.function of ``model`` (and of the models it wraps) left a no-op by a failed first trace.

    Reset, such a function runs its first trace again on its next call.
    Returns how many were reset.
    """
    count = 0
    for function in _functions_of_models(model):
        if _failed_first_trace(function):
            # Back to "never called" (TensorFlow's private state, see the module docstring).
            function._created_variables = None  # noqa: SLF001
            function._variable_creation_config = None  # noqa: SLF001
            count += 1
    return count


def _failed_first_trace(function: Any) -> bool:
    return bool(getattr(function, "_created_variables", None)) and (
        getattr(function, "_no_variable_creation_config", False) is None
    )


def _functions_of_models(model: Any) -> Iterator[Any]:
    """The tf.functions of ``model`` and of the models it holds (wrappers, adapters), each once."""
    seen, pending = set(), [model]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for name in dir(type(obj)):
            if isinstance(inspect.getattr_static(type(obj), name, None), _FUNCTION):
                yield getattr(obj, name)  # a decorated method: this instance's own copy
        for value in getattr(obj, "__dict__", {}).values():
            if isinstance(value, _FUNCTION):
                yield value
            elif hasattr(value, "forward_pass"):  # a wrapped model (enhance, the older interface's adapter)
                pending.append(value)
