"""Coordinate-wise median and trimmed mean.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018.

Both rules treat every client with a positive update weight as one vote:
a Byzantine client could report any example count, so weighting by reported
weights would hand it control of the order statistics.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators.base import (
    AggregationOutput,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.validation import in_interval
from fedsim.aggregators.vectors import participating, stack, unflatten, zeros_like


@attrs.frozen
class CoordinateMedian:
    """Per coordinate, the median over participating clients."""

    def initialize(self) -> AggregatorState:
        return {}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        values, _ = participating(client_values, weights)
        if not values:
            return AggregationOutput(
                zeros_like(client_values[0]), state, {"median/num_clients": 0.0}
            )
        result = np.median(stack(values), axis=0)
        return AggregationOutput(
            unflatten(result, client_values[0]), state, {"median/num_clients": float(len(values))}
        )


@attrs.frozen
class TrimmedMean:
    """Per coordinate, drops the ``floor(beta * n)`` smallest and largest values and
    averages the rest (``n`` participating clients)."""

    beta: float = attrs.field(default=0.1, validator=in_interval(0.0, 0.5))

    def initialize(self) -> AggregatorState:
        return {}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        values, _ = participating(client_values, weights)
        if not values:
            return AggregationOutput(
                zeros_like(client_values[0]), state, {"trimmed_mean/num_trimmed": 0.0}
            )
        num_trimmed = math.floor(self.beta * len(values))
        ordered = np.sort(stack(values), axis=0)
        kept = ordered[num_trimmed : len(values) - num_trimmed]
        return AggregationOutput(
            unflatten(kept.mean(axis=0), client_values[0]),
            state,
            {"trimmed_mean/num_trimmed": float(2 * num_trimmed)},
        )
