"""Conversions between client values (lists of arrays) and flat vectors.

Norms, distances and coordinate-wise statistics are defined over the whole
client value, so most rules flatten each value into one float64 vector, work
on an ``(num_clients, dimension)`` matrix and reshape the result back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedsim.aggregators.base import ClientValue


def flatten(value: ClientValue) -> np.ndarray:
    """Concatenates the arrays of one client value into a float64 vector."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in value])


def unflatten(vector: np.ndarray, like: ClientValue) -> list[np.ndarray]:
    """Splits ``vector`` back into arrays shaped (and typed) like ``like``."""
    arrays, start = [], 0
    for array in like:
        array = np.asarray(array)
        arrays.append(vector[start : start + array.size].reshape(array.shape).astype(array.dtype))
        start += array.size
    return arrays


def stack(client_values: Sequence[ClientValue]) -> np.ndarray:
    """Returns the ``(num_clients, dimension)`` float64 matrix of flattened values."""
    return np.stack([flatten(v) for v in client_values])


def global_norm(value: ClientValue) -> float:
    """L2 norm over all arrays of one client value (NaN/Inf propagate)."""
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64))) for a in value)))


def scale(value: ClientValue, factor: float) -> list[np.ndarray]:
    """Multiplies every array of ``value`` by ``factor``, keeping dtypes."""
    return [(np.asarray(a) * factor).astype(np.asarray(a).dtype) for a in value]


def zeros_like(value: ClientValue) -> list[np.ndarray]:
    """A client value of zeros with the shapes and dtypes of ``value``."""
    return [np.zeros_like(np.asarray(a)) for a in value]


def participating(
    client_values: Sequence[ClientValue], weights: np.ndarray
) -> tuple[list[ClientValue], np.ndarray]:
    """Drops clients with update weight 0: they never count in any rule."""
    keep = np.flatnonzero(weights > 0)
    return [client_values[i] for i in keep], weights[keep]
