"""Shared test helpers: building client values and running one round."""

from __future__ import annotations

import numpy as np

SHAPES = [(3,), (2, 2)]  # two "variables", 7 coordinates in all


def from_vectors(vectors, shapes=SHAPES, dtype=np.float64) -> list[list[np.ndarray]]:
    """Client values whose flattened contents are the rows of ``vectors``."""
    values = []
    for vector in np.asarray(vectors, dtype=np.float64):
        arrays, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            arrays.append(vector[start : start + size].reshape(shape).astype(dtype))
            start += size
        values.append(arrays)
    return values


def to_vector(value) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in value])


def run(aggregator, values, weights=None, state=None, **kwargs):
    """One round from a fresh (or given) state."""
    weights = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
    state = aggregator.initialize() if state is None else state
    return aggregator.next(state, values, weights, **kwargs)
