"""Adaptive functional optimizers: Adam, Yogi, Adagrad.

The server variants follow Reddi, Charles, Zaheer, Garrett, Rush, Konecny,
Kumar, McMahan, "Adaptive Federated Optimization", ICLR 2021, Algorithm 2:

    m <- beta_1 * m + (1 - beta_1) * g
    v <- (Adagrad) v + g^2
         (Adam)    beta_2 * v + (1 - beta_2) * g^2
         (Yogi)    v - (1 - beta_2) * g^2 * sign(v - g^2)
    w <- w - lr * m / (sqrt(v) + epsilon)

``epsilon`` is the paper's adaptivity parameter tau and ``initial_accumulator``
its ``v_{-1}`` (the paper asks for ``v_{-1} >= tau^2``). With
``bias_correction`` Adam and Yogi scale the rate by
``sqrt(1 - beta_2^t) / (1 - beta_1^t)`` as Keras's Adam does (epsilon still
added to the uncorrected ``sqrt(v)``); the paper's algorithm has none.

State: ``{"step": int64, "m": tuple, "v": tuple}`` (``m`` left out when
``beta_1 == 0``); same arithmetic on tf tensors and NumPy arrays.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs

from fedsim.optimizers import _ops
from fedsim.optimizers.schedules import LearningRate, check_learning_rate, learning_rate_at
from fedsim.optimizers.sgd import float_unless_schedule


def _unit_interval(instance, attribute, value):
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name}={value!r} must be in [0, 1)")


def _non_negative(instance, attribute, value):
    if not value >= 0:
        raise ValueError(f"{attribute.name}={value!r} must be >= 0")


def _lr_field(default: float):
    return attrs.field(
        default=default, converter=float_unless_schedule, validator=check_learning_rate
    )


def _beta(default: float):
    return attrs.field(default=default, converter=float, validator=_unit_interval)


def _non_negative_float(default: float):
    return attrs.field(default=default, converter=float, validator=_non_negative)


def _init(optimizer: Any, weights: Sequence[Any]) -> dict[str, Any]:
    state = {
        "step": _ops.new_step_counter(weights[0]),
        "v": tuple(w * 0 + optimizer.initial_accumulator for w in weights),
    }
    if optimizer.beta_1 != 0:
        state["m"] = tuple(w * 0 for w in weights)
    return state


def _next(
    optimizer: Any,
    state: dict[str, Any],
    weights: Sequence[Any],
    gradient: Sequence[Any],
    second_moment: Callable[[Any, Any], Any],
    bias_correction: bool,
):
    """One step shared by the three rules; ``second_moment(v, g)`` is the rule's ``v`` update."""
    lr = learning_rate_at(optimizer.learning_rate, state, weights[0])
    step = state["step"] + 1
    b1 = optimizer.beta_1
    new_state = {
        "step": step,
        "v": tuple(second_moment(v, g) for v, g in zip(state["v"], gradient)),
    }
    if b1 != 0:
        new_state["m"] = tuple(b1 * m + (1 - b1) * g for m, g in zip(state["m"], gradient))
    first = new_state.get("m", tuple(gradient))
    if bias_correction:
        t = _ops.as_float(step, weights[0])
        lr = lr * (1 - optimizer.beta_2**t) ** 0.5 / (1 - b1**t)
    eps = optimizer.epsilon
    updated = [w - lr * m / (v**0.5 + eps) for w, m, v in zip(weights, first, new_state["v"])]
    return new_state, updated


@attrs.frozen
class Adam:
    """Adam (Kingma and Ba, 2015); FedAdam on the server (Reddi et al., 2021)."""

    learning_rate: LearningRate = _lr_field(0.001)
    beta_1: float = _beta(0.9)
    beta_2: float = _beta(0.999)
    epsilon: float = _non_negative_float(1e-7)
    initial_accumulator: float = _non_negative_float(0.0)
    bias_correction: bool = True

    def init(self, weights: Sequence[Any]) -> dict[str, Any]:
        return _init(self, weights)

    def next(self, state: dict[str, Any], weights: Sequence[Any], gradient: Sequence[Any]):
        b2 = self.beta_2
        return _next(
            self,
            state,
            weights,
            gradient,
            lambda v, g: b2 * v + (1 - b2) * g * g,
            self.bias_correction,
        )


@attrs.frozen
class Yogi:
    """Yogi (Zaheer et al., 2018): ``v`` moves towards ``g^2`` additively, not multiplicatively."""

    learning_rate: LearningRate = _lr_field(0.01)
    beta_1: float = _beta(0.9)
    beta_2: float = _beta(0.999)
    epsilon: float = _non_negative_float(1e-3)
    initial_accumulator: float = _non_negative_float(1e-6)
    bias_correction: bool = True

    def init(self, weights: Sequence[Any]) -> dict[str, Any]:
        return _init(self, weights)

    def next(self, state: dict[str, Any], weights: Sequence[Any], gradient: Sequence[Any]):
        b2 = self.beta_2

        def second_moment(v, g):
            g2 = g * g
            return v - (1 - b2) * g2 * _ops.sign(v - g2)

        return _next(self, state, weights, gradient, second_moment, self.bias_correction)


@attrs.frozen
class Adagrad:
    """Adagrad (Duchi et al., 2011) with epsilon outside the root; optional ``beta_1`` momentum as in FedAdagrad."""

    learning_rate: LearningRate = _lr_field(0.01)
    beta_1: float = _beta(0.0)
    epsilon: float = _non_negative_float(1e-7)
    initial_accumulator: float = _non_negative_float(0.1)

    def init(self, weights: Sequence[Any]) -> dict[str, Any]:
        return _init(self, weights)

    def next(self, state: dict[str, Any], weights: Sequence[Any], gradient: Sequence[Any]):
        return _next(self, state, weights, gradient, lambda v, g: v + g * g, bias_correction=False)
