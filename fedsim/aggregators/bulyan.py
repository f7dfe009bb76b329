"""Bulyan.

El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed
Learning in Byzantium", ICML 2018.

With ``n >= 4f + 3`` participating clients: select ``theta = n - 2f`` values by
running Krum repeatedly (each time removing the winner from the candidates),
then per coordinate average the ``beta = theta - 2f`` selected values closest
to the coordinate-wise median of the selection. Every client with a positive
update weight counts as one vote.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from fedsim.aggregators.krum import check_cohort_size, krum_scores, order_by_score
from fedsim.aggregators.validation import int_at_least
from fedsim.aggregators.vector_rule import VectorRule


def iterated_krum(matrix: np.ndarray, num_byzantine: int, num_selected: int) -> np.ndarray:
    """Rows chosen by applying Krum ``num_selected`` times without replacement."""
    remaining = list(range(matrix.shape[0]))
    chosen = []
    for _ in range(num_selected):
        candidates = matrix[remaining]
        best = order_by_score(krum_scores(candidates, num_byzantine), candidates)[0]
        chosen.append(remaining.pop(best))
    return matrix[chosen]


def closest_to_median_mean(selection: np.ndarray, num_kept: int) -> np.ndarray:
    """Per coordinate, the mean of the ``num_kept`` values closest to the median."""
    # Sorting the values first makes the kept set depend on the values only:
    # of two values equally far from the median the smaller one is kept,
    # whichever client sent it.
    by_value = np.sort(selection, axis=0)
    median = np.median(by_value, axis=0)
    closest = np.argsort(np.abs(by_value - median), axis=0, kind="stable")[:num_kept]
    return np.take_along_axis(by_value, closest, axis=0).mean(axis=0)


@attrs.frozen
class Bulyan(VectorRule):
    """Bulyan over Krum, tolerating ``num_byzantine`` Byzantine clients."""

    num_byzantine: int = attrs.field(default=1, validator=int_at_least(0))

    empty_measurements: ClassVar[dict[str, float]] = {"bulyan/num_selected": 0.0}

    def combine(self, matrix, weights):
        f = self.num_byzantine
        check_cohort_size(len(matrix), 4 * f + 3, "bulyan", f)
        theta = len(matrix) - 2 * f
        selection = iterated_krum(matrix, f, theta)
        result = closest_to_median_mean(selection, theta - 2 * f)
        return result, {"bulyan/num_selected": float(theta)}