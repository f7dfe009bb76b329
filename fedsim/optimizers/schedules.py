"""Learning-rate schedules: callables ``lr(round_num)`` with ``round_num`` counting from 1.

An optimizer's ``learning_rate`` is a float or one of these. An optimizer
with a schedule keeps an int64 ``step`` in its state (the number of updates
applied so far) and uses ``lr(step + 1)`` for the next update. On the server
the optimizer is stepped once per round, so ``step + 1`` is the round number
(also after resuming from a checkpoint, since the counter is in the state).
On a client the state starts fresh every round, so there it counts local steps.

Schedules use only arithmetic (and ``fedsim.optimizers._ops``), so they run
on the float tensor of a traced client loop as well as on Python floats.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import attrs

from fedsim.optimizers import _ops

Schedule = Callable[[Any], Any]
LearningRate = Union[float, Schedule]


def _positive(instance, attribute, value):
    if not value > 0:
        raise ValueError(f"{attribute.name}={value!r} must be > 0")


def _non_negative(instance, attribute, value):
    if not value >= 0:
        raise ValueError(f"{attribute.name}={value!r} must be >= 0")


def _maximum(a: Any, b: Any) -> Any:
    # max(a, b) by arithmetic, so it works on tensors and Python floats alike.
    return (a + b + abs(a - b)) / 2


@attrs.frozen
class Constant:
    """``lr(r) = value``."""

    value: float = attrs.field(converter=float, validator=_non_negative)

    def __call__(self, round_num: Any) -> Any:
        return round_num * 0 + self.value


@attrs.frozen
class ExponentialDecay:
    """``lr(r) = initial * decay_rate ** ((r - 1) / decay_rounds)``; round 1 uses ``initial``.

    With ``staircase`` the exponent is floored: the rate drops every ``decay_rounds`` rounds.
    """

    initial: float = attrs.field(converter=float, validator=_non_negative)
    decay_rate: float = attrs.field(converter=float, validator=_positive)
    decay_rounds: float = attrs.field(default=1.0, converter=float, validator=_positive)
    staircase: bool = False

    def __call__(self, round_num: Any) -> Any:
        exponent = (round_num - 1) / self.decay_rounds
        if self.staircase:
            exponent = (round_num - 1) // self.decay_rounds
        return self.initial * self.decay_rate**exponent


@attrs.frozen
class InverseSqrtDecay:
    """``lr(r) = initial / sqrt(1 + (r - 1) / decay_rounds)``; round 1 uses ``initial``."""

    initial: float = attrs.field(converter=float, validator=_non_negative)
    decay_rounds: float = attrs.field(default=1.0, converter=float, validator=_positive)

    def __call__(self, round_num: Any) -> Any:
        return self.initial * (1 + (round_num - 1) / self.decay_rounds) ** -0.5


@attrs.frozen
class WarmupThenDecay:
    """Linear warm-up to ``after_warmup(1)`` over ``warmup_rounds``, then ``after_warmup``.

    ``lr(r) = after_warmup(1) * r / warmup_rounds`` for ``r <= warmup_rounds``,
    then ``after_warmup(r - warmup_rounds)``: the decay starts where the warm-up ends.
    """

    warmup_rounds: int = attrs.field(validator=_positive)
    after_warmup: Schedule = attrs.field()

    @after_warmup.validator
    def _callable(self, attribute, value):
        if not callable(value):
            raise ValueError(
                f"after_warmup={value!r} must be a schedule, e.g. InverseSqrtDecay(0.1)"
            )

    def __call__(self, round_num: Any) -> Any:
        peak = self.after_warmup(round_num * 0 + 1)
        warm = peak * round_num / self.warmup_rounds
        # Clamp the decay's argument to >= 1 so the branch not taken stays finite.
        decayed = self.after_warmup(_maximum(round_num - self.warmup_rounds, round_num * 0 + 1))
        return _ops.select(round_num <= self.warmup_rounds, warm, decayed)


def learning_rate_at(learning_rate: LearningRate, state: dict, like: Any) -> Any:
    """The rate for the next update: the float itself, or the schedule at ``state['step'] + 1``."""
    if not callable(learning_rate):
        return learning_rate
    return learning_rate(_ops.as_float(state["step"] + 1, like))


def check_learning_rate(instance, attribute, value) -> None:
    """attrs validator: a non-negative float or a schedule callable."""
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"{attribute.name}={value!r} must be a float >= 0 or a schedule such as "
            "fedsim.optimizers.ExponentialDecay(0.1, 0.99)"
        )
