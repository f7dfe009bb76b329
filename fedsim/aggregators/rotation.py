"""Random rotation by a randomized Hadamard transform.

Suresh, Yu, Kumar, McMahan, "Distributed Mean Estimation with Limited
Communication", ICML 2017.

Rotating every client value by the same random orthogonal matrix
``R = H D / sqrt(n)`` (``D`` random signs, ``H`` the Walsh-Hadamard matrix,
``n`` the dimension padded with zeros to a power of two) spreads each value's
energy evenly over the coordinates, which shrinks the range a quantizer must
cover. Wrap a quantizer in this: the inner rule aggregates rotated values and
the result is rotated back. The rotation is exact only for rules that commute
with it (means); ``D`` comes from ``[seed, round]``.
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


def padded_size(dimension: int) -> int:
    """Smallest power of two >= ``dimension``."""
    return 1 << max(dimension - 1, 0).bit_length()


def hadamard_transform(vector: np.ndarray) -> np.ndarray:
    """Orthonormal fast Walsh-Hadamard transform (its own inverse); the length
    must be a power of two."""
    n = vector.size
    result = vector.astype(np.float64)
    half = 1
    while half < n:
        # Pair entry i with entry i + half inside each block of 2 * half.
        blocks = result.reshape(-1, 2, half)
        result = np.stack([blocks[:, 0] + blocks[:, 1], blocks[:, 0] - blocks[:, 1]], axis=1)
        result = result.reshape(n)
        half *= 2
    return result / np.sqrt(n)


def rotate(vector: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``H D [vector, 0...]`` with ``len(signs)`` the padded size."""
    padded = np.zeros(signs.size)
    padded[: vector.size] = vector
    return hadamard_transform(signs * padded)


def unrotate(rotated: np.ndarray, signs: np.ndarray, dimension: int) -> np.ndarray:
    """Inverse of ``rotate``, dropping the padding."""
    return (signs * hadamard_transform(rotated))[:dimension]


@attrs.frozen
class RandomRotation:
    """Rotates client values, runs ``inner`` on them, rotates the result back."""

    inner: Aggregator = attrs.field(validator=aggregator)
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
        dimension = sum(np.size(a) for a in client_values[0])
        rng = np.random.default_rng([state["seed"], state["round"]])
        signs = rng.choice([-1.0, 1.0], size=padded_size(dimension))
        rotated_values = [[rotate(flatten(value), signs)] for value in client_values]
        inner = self.inner.next(state["inner"], rotated_values, weights, client_ids=client_ids)
        result = unflatten(unrotate(inner.result[0], signs, dimension), client_values[0])
        new_state = seeded.next_state(state, inner.state)
        measurements = {**inner.measurements, "rotation/padded_dimension": float(signs.size)}
        return AggregationOutput(result, new_state, measurements)
