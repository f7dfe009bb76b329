"""Cohort sampling: which clients take part in a round, deterministic from the run's seed."""
from __future__ import annotations

import attrs
import numpy as np


class SamplingError(ValueError):
    """Raised when a cohort cannot be drawn (e.g. larger than the population)."""


@attrs.frozen
class UniformSampler:
    """Draws ``cohort_size`` distinct clients uniformly at random each round.

    Round ``r``'s cohort depends only on ``(seed, r)``, so a resumed run draws
    the same cohorts as an uninterrupted one without carrying generator state.
    """

    cohort_size: int = attrs.field(validator=attrs.validators.gt(0))
    seed: int = 0

    def sample(self, round_num: int, population_size: int) -> np.ndarray:
        """Indices into the population for round ``round_num`` (1-based)."""
        if self.cohort_size > population_size:
            raise SamplingError(
                f"cohort_size={self.cohort_size} is larger than the population of "
                f"{population_size} clients; lower cohort_size to at most {population_size}"
            )
        rng = np.random.default_rng([self.seed, round_num])
        return rng.choice(population_size, self.cohort_size, replace=False)
