"""The shared shape of stateless robust rules: flatten, combine, reshape.

Median, trimmed mean, Krum, Bulyan and the geometric median all validate the
round, drop zero-weight clients, work on the ``(num_clients, dimension)``
matrix of flattened values, and reshape one vector back. Subclasses write only
``combine``.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Sequence

import numpy as np

from fedsim.aggregators.base import (
    AggregationOutput,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.vectors import participating, stack, unflatten, zeros_like


class VectorRule(abc.ABC):
    """Base for stateless rules over the participating clients' flattened values.

    ``empty_measurements`` are reported when no client has a positive update
    weight; the result is then zeros (the server model stays put).
    """

    empty_measurements: ClassVar[dict[str, float]] = {}

    def initialize(self) -> AggregatorState:
        return {}

    @abc.abstractmethod
    def combine(self, matrix: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """The aggregate vector and measurements from ``(clients, dimension)`` values and weights."""

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        values, active_weights = participating(client_values, weights)
        if not values:
            return AggregationOutput(zeros_like(client_values[0]), state, dict(self.empty_measurements))
        vector, measurements = self.combine(stack(values), active_weights)
        return AggregationOutput(unflatten(vector, client_values[0]), state, measurements)
