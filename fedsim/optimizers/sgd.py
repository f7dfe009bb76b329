"""Functional SGD, with optional (Nesterov) momentum.

Optimizers in fedsim are pure: ``init(weights) -> state`` and
``next(state, weights, gradient) -> (state, weights)``, over lists of arrays.
The same code runs inside a client's traced TensorFlow loop (tensors) and on
the server (NumPy arrays), because it uses only arithmetic operators. State
holds tuples, not lists: AutoGraph would try to stack a list carried through
a ``for batch in dataset`` loop into one tensor.
"""
from __future__ import annotations

from typing import Any, Sequence

import attrs


def _non_negative(instance, attribute, value):
    if not value >= 0:
        raise ValueError(f"{attribute.name}={value!r} must be >= 0")


def _momentum_range(instance, attribute, value):
    if not 0 <= value < 1:
        raise ValueError(f"momentum={value!r} must be in [0, 1); use 0 for plain SGD")


@attrs.frozen
class SGD:
    """``w <- w - lr * g``; with momentum ``m <- momentum * m + g`` and ``w <- w - lr * m``.

    Nesterov momentum steps with ``g + momentum * m`` instead of ``m`` (the
    formulation of Keras's ``SGD(nesterov=True)``).
    """

    learning_rate: float = attrs.field(default=0.01, converter=float, validator=_non_negative)
    momentum: float = attrs.field(default=0.0, converter=float, validator=_momentum_range)
    nesterov: bool = False

    def init(self, weights: Sequence[Any]) -> dict[str, Any]:
        if self.momentum == 0:
            return {}
        return {"momentum": tuple(w * 0 for w in weights)}

    def next(self, state: dict[str, Any], weights: Sequence[Any], gradient: Sequence[Any]):
        lr = self.learning_rate
        if self.momentum == 0:
            return state, [w - lr * g for w, g in zip(weights, gradient)]
        buffers = tuple(self.momentum * m + g for m, g in zip(state["momentum"], gradient))
        if self.nesterov:
            steps = [g + self.momentum * m for g, m in zip(gradient, buffers)]
        else:
            steps = buffers
        return {"momentum": buffers}, [w - lr * s for w, s in zip(weights, steps)]
