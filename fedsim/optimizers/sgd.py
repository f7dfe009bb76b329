"""Functional SGD, with optional (Nesterov) momentum.

Optimizers in fedsim are pure: ``init(weights) -> state`` and
``next(state, weights, gradient) -> (state, weights)``, over lists of arrays.
The same code runs inside a client's traced TensorFlow loop (tensors) and on
the server (NumPy arrays), because it uses only arithmetic operators. State
holds tuples, not lists: AutoGraph would try to stack a list carried through
a ``for batch in dataset`` loop into one tensor.

State is a dict of tuples of arrays and int64 scalars, so checkpoints store
it without pickle.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from fedsim.optimizers import _ops
from fedsim.optimizers.schedules import LearningRate, check_learning_rate, learning_rate_at


def float_unless_schedule(value: Any) -> Any:
    """attrs converter: ints become floats; anything else is left for the validator to judge."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _momentum_range(instance, attribute, value):
    if not 0 <= value < 1:
        raise ValueError(f"momentum={value!r} must be in [0, 1); use 0 for plain SGD")


@attrs.frozen
class SGD:
    """``w <- w - lr * g``; with momentum ``m <- momentum * m + g`` and ``w <- w - lr * m``.

    Nesterov momentum steps with ``g + momentum * m`` instead of ``m`` (the
    formulation of Keras's ``SGD(nesterov=True)``). ``learning_rate`` may be a
    schedule (see ``fedsim.optimizers.schedules``); only then does the state
    carry a ``step`` counter, so constant-rate SGD keeps its original state.
    """

    learning_rate: LearningRate = attrs.field(
        default=0.01, converter=float_unless_schedule, validator=check_learning_rate
    )
    momentum: float = attrs.field(default=0.0, converter=float, validator=_momentum_range)
    nesterov: bool = False

    def init(self, weights: Sequence[Any]) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.momentum != 0:
            state["momentum"] = tuple(w * 0 for w in weights)
        if callable(self.learning_rate):
            state["step"] = _ops.new_step_counter(weights[0])
        return state

    def next(self, state: dict[str, Any], weights: Sequence[Any], gradient: Sequence[Any]):
        lr = learning_rate_at(self.learning_rate, state, weights[0])
        new_state = dict(state)
        if "step" in state:
            new_state["step"] = state["step"] + 1
        if self.momentum == 0:
            return new_state, [w - lr * g for w, g in zip(weights, gradient)]
        buffers = tuple(self.momentum * m + g for m, g in zip(state["momentum"], gradient))
        new_state["momentum"] = buffers
        if self.nesterov:
            steps = [g + self.momentum * m for g, m in zip(gradient, buffers)]
        else:
            steps = buffers
        return new_state, [w - lr * s for w, s in zip(weights, steps)]
