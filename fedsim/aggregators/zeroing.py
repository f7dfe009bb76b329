"""Zeroing: replace client values that are non-finite or too large with zeros.

A safety net against diverged or malicious clients (the same role as
TensorFlow Federated's zeroing factory). The norm bound is fixed or adapts
towards a target quantile of client norms (Andrew et al., NeurIPS 2021,
see ``norm_bound``); an adaptive zeroing bound is usually set to a high
quantile such as 0.98 so only outliers are zeroed.

A zeroed client keeps its update weight: the zero update is a vote for "no
change", and the cohort's total weight (hence any fixed denominator or
privacy calibration downstream) stays what it would have been.
"""

from __future__ import annotations

from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators.base import (
    AggregationOutput,
    Aggregator,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.norm_bound import NormBound
from fedsim.aggregators.validation import aggregator, optional_quantile, positive
from fedsim.aggregators.vectors import global_norm, zeros_like


@attrs.frozen
class Zeroing:
    """Zeroes participating client values that hold NaN/Inf or have norm above the
    bound, then runs ``inner``."""

    inner: Aggregator = attrs.field(validator=aggregator)
    norm_bound: float = attrs.field(default=1e6, validator=positive)
    target_quantile: float | None = attrs.field(default=None, validator=optional_quantile)
    learning_rate: float = attrs.field(default=0.2, validator=positive)

    @property
    def bound(self) -> NormBound:
        return NormBound(self.norm_bound, self.target_quantile, self.learning_rate)

    def initialize(self) -> AggregatorState:
        return {"norm_bound": self.bound.initialize(), "inner": self.inner.initialize()}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        bound = state["norm_bound"]
        kept_values, norms, num_zeroed = [], [], 0
        for value, weight in zip(client_values, weights):
            norm = global_norm(value)
            if weight > 0:
                norms.append(norm)
            # A NaN anywhere makes the norm NaN and an Inf makes it Inf, so one
            # finiteness check on the norm catches both.
            if weight > 0 and not (np.isfinite(norm) and norm <= bound):
                kept_values.append(zeros_like(value))
                num_zeroed += 1
            else:
                kept_values.append(value)
        inner = self.inner.next(state["inner"], kept_values, weights, client_ids=client_ids)
        new_state = {
            "norm_bound": self.bound.update(bound, np.asarray(norms)),
            "inner": inner.state,
        }
        measurements = {
            **inner.measurements,
            "zeroing/norm_bound": bound,
            "zeroing/num_zeroed": float(num_zeroed),
        }
        return AggregationOutput(inner.result, new_state, measurements)
