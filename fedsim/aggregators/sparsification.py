"""Top-k sparsification with error feedback.

Stich, Cordonnier, Jaggi, "Sparsified SGD with Memory", NeurIPS 2018;
Karimireddy, Rebjock, Stich, Jaggi, "Error Feedback Fixes SignSGD and other
Gradient Compression Schemes", ICML 2019.

Each participating client adds its residual (what earlier rounds did not
send) to its value, sends the ``k = ceil(fraction * dimension)`` coordinates
of largest magnitude as (32-bit value, index) pairs, and keeps the rest as
its new residual. Residuals belong to clients, not cohort positions, so
``next`` needs ``client_ids`` when ``error_feedback`` is on; they live in the
state as ``{"residuals": {str(client_id): float64 vector}}``.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators.base import (
    AggregationError,
    AggregationOutput,
    Aggregator,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.validation import aggregator, boolean, in_interval
from fedsim.aggregators.vectors import flatten, unflatten


def top_k(vector: np.ndarray, k: int) -> np.ndarray:
    """``vector`` with all but its ``k`` largest-magnitude entries set to zero."""
    kept = np.argpartition(np.abs(vector), vector.size - k)[vector.size - k :]
    sparse = np.zeros_like(vector)
    sparse[kept] = vector[kept]
    return sparse


def bits_per_client(dimension: int, k: int) -> int:
    """Bits one client sends: ``k`` float32 values and their indices."""
    return k * (32 + math.ceil(math.log2(dimension)))


@attrs.frozen
class TopKSparsification:
    """Sends each participating client's top ``fraction`` of coordinates, then runs
    ``inner`` on the sparse values."""

    inner: Aggregator = attrs.field(validator=aggregator)
    fraction: float = attrs.field(
        default=0.01, validator=in_interval(0.0, 1.0, closed_low=False, closed_high=True)
    )
    error_feedback: bool = attrs.field(default=True, validator=boolean)

    def initialize(self) -> AggregatorState:
        return {"residuals": {}, "inner": self.inner.initialize()}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        if self.error_feedback and (client_ids is None or len(client_ids) != len(client_values)):
            raise AggregationError(
                "top-k with error_feedback=True keeps a residual per client, so next() needs "
                "client_ids with one id per client value; pass client_ids=... or set "
                "error_feedback=False"
            )
        dimension = sum(np.size(a) for a in client_values[0])
        k = max(1, math.ceil(self.fraction * dimension))
        residuals = dict(state["residuals"])
        sparse_values = []
        for index, (value, weight) in enumerate(zip(client_values, weights)):
            if weight == 0:
                sparse_values.append(value)  # sends nothing; its residual waits
                continue
            vector = flatten(value)
            if self.error_feedback:
                key = str(client_ids[index])
                vector = vector + residuals.get(key, 0.0)
            sparse = top_k(vector, k)
            if self.error_feedback:
                residuals[key] = vector - sparse
            sparse_values.append(unflatten(sparse, value))
        inner = self.inner.next(state["inner"], sparse_values, weights, client_ids=client_ids)
        measurements = {
            **inner.measurements,
            "top_k/bits_per_client": float(bits_per_client(dimension, k)),
            "top_k/float32_bits_per_client": float(32 * dimension),
        }
        return AggregationOutput(
            inner.result, {"residuals": residuals, "inner": inner.state}, measurements
        )
