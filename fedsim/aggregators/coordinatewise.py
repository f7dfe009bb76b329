"""Coordinate-wise median and trimmed mean.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018.

Both rules treat every client with a positive update weight as one vote:
a Byzantine client could report any example count, so weighting by reported
weights would hand it control of the order statistics.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np

from fedsim.aggregators.validation import in_interval
from fedsim.aggregators.vector_rule import VectorRule


@attrs.frozen
class CoordinateMedian(VectorRule):
    """Per coordinate, the median over participating clients."""

    empty_measurements: ClassVar[dict[str, float]] = {"median/num_clients": 0.0}

    def combine(self, matrix, weights):
        return np.median(matrix, axis=0), {"median/num_clients": float(len(matrix))}


@attrs.frozen
class TrimmedMean(VectorRule):
    """Per coordinate, drops the ``floor(beta * n)`` smallest and largest values and
    averages the rest (``n`` participating clients)."""

    beta: float = attrs.field(default=0.1, validator=in_interval(0.0, 0.5))

    empty_measurements: ClassVar[dict[str, float]] = {"trimmed_mean/num_trimmed": 0.0}

    def combine(self, matrix, weights):
        num_trimmed = math.floor(self.beta * len(matrix))
        kept = np.sort(matrix, axis=0)[num_trimmed : len(matrix) - num_trimmed]
        return kept.mean(axis=0), {"trimmed_mean/num_trimmed": float(2 * num_trimmed)}