"""Unbiased stochastic uniform quantization of client values to ``bits`` bits.

Alistarh, Grubic, Li, Tomioka, Vojnovic, "QSGD: Communication-Efficient SGD
via Gradient Quantization and Encoding", NeurIPS 2017; Suresh, Yu, Kumar,
McMahan, "Distributed Mean Estimation with Limited Communication", ICML 2017.

Each participating client sends the minimum and maximum of its flattened
value (two 64-bit floats) and, per coordinate, an integer level in
``[0, 2**bits - 1]`` on the uniform grid between them, rounded up or down at
random with the probabilities that make the dequantized value unbiased.
Randomness comes from ``[seed, round, client position]``, so a round is
reproducible given the cohort order.
"""

from __future__ import annotations

from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators import seeded
from fedsim.aggregators.base import (
    AggregationOutput,
    Aggregator,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.validation import aggregator, int_at_least
from fedsim.aggregators.vectors import flatten, unflatten

RANGE_BITS = 2 * 64  # min and max of each client value, sent as float64


def stochastic_round(scaled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rounds each entry down or up at random so that E[result] = ``scaled``."""
    low = np.floor(scaled)
    return low + (rng.random(scaled.shape) < scaled - low)


def quantize(
    vector: np.ndarray, bits: int, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """Encodes ``vector`` as integer levels plus its range ``(low, high)``."""
    low, high = float(vector.min()), float(vector.max())
    num_intervals = 2**bits - 1
    if high == low:
        return np.zeros(vector.shape, dtype=np.uint64), low, high
    scaled = (vector - low) / (high - low) * num_intervals
    # Clamp: (x - low) / (high - low) can exceed 1 by one rounding error.
    levels = np.clip(stochastic_round(scaled, rng), 0, num_intervals)
    return levels.astype(np.uint64), low, high


def dequantize(levels: np.ndarray, low: float, high: float, bits: int) -> np.ndarray:
    """Inverse of ``quantize`` (up to the random rounding)."""
    return low + levels.astype(np.float64) * ((high - low) / (2**bits - 1))


def bits_per_client(dimension: int, bits: int) -> int:
    """Bits one client sends: a level per coordinate plus the range."""
    return dimension * bits + RANGE_BITS


@attrs.frozen
class StochasticQuantization:
    """Quantizes each participating client value to ``bits`` bits per coordinate,
    then runs ``inner`` on the dequantized values."""

    inner: Aggregator = attrs.field(validator=aggregator)
    bits: int = attrs.field(default=8, validator=int_at_least(1))
    seed: int = attrs.field(default=0, validator=int_at_least(0))

    def initialize(self) -> AggregatorState:
        return seeded.initial_state(self.seed, self.inner)

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        decoded_values = []
        for position, (value, weight) in enumerate(zip(client_values, weights)):
            if weight == 0:
                decoded_values.append(value)  # sends nothing, counts for nothing
                continue
            rng = np.random.default_rng([state["seed"], state["round"], position])
            levels, low, high = quantize(flatten(value), self.bits, rng)
            decoded_values.append(unflatten(dequantize(levels, low, high, self.bits), value))
        inner = self.inner.next(state["inner"], decoded_values, weights, client_ids=client_ids)
        dimension = sum(np.size(a) for a in client_values[0])
        new_state = seeded.next_state(state, inner.state)
        measurements = {
            **inner.measurements,
            "quantization/bits_per_client": float(bits_per_client(dimension, self.bits)),
            "quantization/float32_bits_per_client": float(32 * dimension),
        }
        return AggregationOutput(inner.result, new_state, measurements)
