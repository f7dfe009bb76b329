"""Geometric median by the smoothed Weiszfeld algorithm (RFA).

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning",
IEEE Transactions on Signal Processing, 2022.

Approximately minimizes ``sum_i a_i * max(nu, |z - x_i|)`` over ``z``, where
``a_i`` are the update weights normalized to sum to one (as in the paper: the
rule is robust because a client's pull on ``z`` is bounded, not because it is
unweighted). The smoothing ``nu > 0`` keeps each step well defined when ``z``
lands on a client value.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from fedsim.aggregators.validation import int_at_least, positive
from fedsim.aggregators.vector_rule import VectorRule


def smoothed_objective(z: np.ndarray, matrix: np.ndarray, alphas: np.ndarray, nu: float) -> float:
    """``sum_i alphas[i] * max(nu, |z - matrix[i]|)``."""
    distances = np.linalg.norm(matrix - z, axis=1)
    return float(np.sum(alphas * np.maximum(nu, distances)))


def smoothed_weiszfeld(
    matrix: np.ndarray, alphas: np.ndarray, nu: float, max_iterations: int, tolerance: float
) -> tuple[np.ndarray, int]:
    """Returns the approximate geometric median and the iterations run.

    Stops when an iteration improves the objective by less than
    ``tolerance`` times the current objective.
    """
    z = alphas @ matrix
    objective = smoothed_objective(z, matrix, alphas, nu)
    for iteration in range(1, max_iterations + 1):
        betas = alphas / np.maximum(nu, np.linalg.norm(matrix - z, axis=1))
        z = betas @ matrix / betas.sum()
        previous, objective = objective, smoothed_objective(z, matrix, alphas, nu)
        if previous - objective <= tolerance * objective:
            return z, iteration
    return z, max_iterations


@attrs.frozen
class GeometricMedian(VectorRule):
    """Weighted geometric median of the participating client values."""

    max_iterations: int = attrs.field(default=100, validator=int_at_least(1))
    smoothing: float = attrs.field(default=1e-6, validator=positive)
    tolerance: float = attrs.field(default=1e-7, validator=positive)

    empty_measurements: ClassVar[dict[str, float]] = {"geometric_median/iterations": 0.0}

    def combine(self, matrix, weights):
        alphas = weights / weights.sum()
        z, iterations = smoothed_weiszfeld(
            matrix, alphas, self.smoothing, self.max_iterations, self.tolerance
        )
        return z, {"geometric_median/iterations": float(iterations)}