"""Krum and Multi-Krum.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS 2017.

Each participating client gets a score: the sum of squared distances to its
``n - f - 2`` nearest other clients. Krum returns the client value with the
lowest score; Multi-Krum averages the ``num_selected`` lowest-scoring values.
Every client with a positive update weight counts as one vote.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from fedsim.aggregators.base import AggregationError
from fedsim.aggregators.validation import int_at_least
from fedsim.aggregators.vector_rule import VectorRule


def pairwise_squared_distances(matrix: np.ndarray) -> np.ndarray:
    """Squared L2 distances between rows.

    Computed row by row from differences rather than with the
    ``|x|^2 + |y|^2 - 2 x.y`` identity: exact symmetry and no cancellation,
    so scores (and ties) do not depend on client order.
    """
    return np.stack([np.sum(np.square(matrix - row), axis=1) for row in matrix])


def krum_scores(matrix: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Krum score per row: sum of squared distances to its closest
    ``max(n - f - 2, 1)`` other rows (at least one, so a score is never empty)."""
    n = matrix.shape[0]
    num_neighbours = max(n - num_byzantine - 2, 1)
    distances = pairwise_squared_distances(matrix)
    # Column 0 after sorting is the row's zero distance to itself.
    return np.sort(distances, axis=1)[:, 1 : num_neighbours + 1].sum(axis=1)


def order_by_score(scores: np.ndarray, matrix: np.ndarray) -> list[int]:
    """Row indices by increasing score; ties broken by the row's bytes, so the
    order depends on the values only, never on which client came first."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], matrix[i].tobytes()))


def check_cohort_size(n: int, minimum: int, rule: str, num_byzantine: int) -> None:
    """Raises if ``n`` participating clients are too few for ``rule``."""
    if n < minimum:
        raise AggregationError(
            f"{rule} with num_byzantine={num_byzantine} needs at least {minimum} participating "
            f"clients, got {n}; sample more clients per round or lower num_byzantine"
        )


@attrs.frozen
class Krum(VectorRule):
    """Krum (``num_selected=1``) or Multi-Krum (``num_selected=m > 1``)."""

    num_byzantine: int = attrs.field(default=1, validator=int_at_least(0))
    num_selected: int = attrs.field(default=1, validator=int_at_least(1))

    empty_measurements: ClassVar[dict[str, float]] = {"krum/num_selected": 0.0}

    def combine(self, matrix, weights):
        # Krum's guarantee needs n > 2f + 2; Multi-Krum also needs m <= n.
        minimum = max(2 * self.num_byzantine + 3, self.num_selected)
        check_cohort_size(len(matrix), minimum, "krum", self.num_byzantine)
        selected = order_by_score(krum_scores(matrix, self.num_byzantine), matrix)
        result = matrix[selected[: self.num_selected]].mean(axis=0)
        return result, {"krum/num_selected": float(self.num_selected)}