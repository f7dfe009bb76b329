"""Parameter checks shared by the aggregator classes.

Aggregators are ``attrs.frozen`` configuration objects; these validators run
when one is built, so a bad experiment config fails before round one with a
message that names the bad value and says how to fix it.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from fedsim.aggregators.base import AggregationError, Aggregator


class AggregatorConfigError(AggregationError):
    """Raised when an aggregator is configured with a bad parameter."""


def _error(instance: Any, attribute: attrs.Attribute, value: Any, problem: str):
    """An error naming the class, the parameter and its bad value."""
    return AggregatorConfigError(f"{type(instance).__name__}: {attribute.name}={value!r} {problem}")


def positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    """Requires a finite number > 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise _error(instance, attribute, value, "must be a finite number > 0")


def non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    """Requires a finite number >= 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise _error(instance, attribute, value, "must be a finite number >= 0")


def boolean(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Requires ``True`` or ``False`` (not a number that happens to be truthy)."""
    if not isinstance(value, bool):
        raise _error(instance, attribute, value, "must be true or false")


def int_at_least(minimum: int):
    """Returns a validator requiring an ``int`` >= ``minimum``."""

    def check(instance: Any, attribute: attrs.Attribute, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _error(instance, attribute, value, f"must be an integer >= {minimum}")

    return check


def in_interval(low: float, high: float, *, closed_low: bool = True, closed_high: bool = False):
    """Returns a validator requiring ``low <= value < high`` (bounds as configured)."""
    brackets = ("[" if closed_low else "(", "]" if closed_high else ")")

    def check(instance: Any, attribute: attrs.Attribute, value: float) -> None:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value >= low if closed_low else value > low)
        ok = ok and (value <= high if closed_high else value < high)
        if not ok:
            interval = f"{brackets[0]}{low}, {high}{brackets[1]}"
            raise _error(instance, attribute, value, f"must be in {interval}")

    return check


def one_of(*choices: str):
    """Returns a validator requiring one of ``choices``."""

    def check(instance: Any, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise _error(
                instance, attribute, value, f"is not supported; use one of {list(choices)}"
            )

    return check


def optional_quantile(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    """Requires ``None`` (fixed bound) or a target quantile in (0, 1)."""
    if value is not None:
        in_interval(0.0, 1.0, closed_low=False)(instance, attribute, value)


def aggregator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Requires an object implementing the ``Aggregator`` protocol."""
    if not isinstance(value, Aggregator):
        raise _error(
            instance,
            attribute,
            value,
            "is not an aggregator: it needs initialize() and "
            "next(state, client_values, update_weights)",
        )
