"""Weighted and unweighted means of client values: the FedAvg aggregator."""

from __future__ import annotations

from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators.base import (
    AggregationOutput,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
    weighted_sum,
)
from fedsim.aggregators.validation import boolean


@attrs.frozen
class MeanAggregator:
    """Mean of client values.

    ``weighted=True`` weights each client by its update weight (its example
    count under FedAvg). ``weighted=False`` gives each client with a positive
    update weight the same weight 1; clients with weight 0 never count, so an
    empty or dropped client cannot pull the mean towards zero.

    When no client has a positive weight the result is all zeros (the server
    model stays where it is) and the measurement ``mean/total_weight`` is 0.
    """

    weighted: bool = attrs.field(default=True, validator=boolean)

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
        if not self.weighted:
            weights = (weights > 0).astype(np.float64)
        total_weight = float(weights.sum())
        sums = weighted_sum(client_values, weights)
        dtypes = [np.asarray(a).dtype for a in client_values[0]]
        scale = 1.0 / total_weight if total_weight > 0 else 0.0
        result = [(s * scale).astype(d) for s, d in zip(sums, dtypes)]
        return AggregationOutput(
            result=result,
            state=state,
            measurements={"mean/total_weight": total_weight},
        )
