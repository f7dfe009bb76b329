"""Cohort sampling and client availability, deterministic from the run's seed.

Samplers answer ``sample(round_num, population_size) -> indices``, and
``participation(population_size)``: what their draws prove to a privacy
accountant (``fedsim.privacy.Participation``). Round ``r``'s draw depends only
on ``(seed, r)``, so a resumed run draws the same cohorts as
an uninterrupted one without carrying generator state. ``Dropout`` and
``Stragglers`` decide, per ``(seed, round, client id)``, whether a sampled
client reports at all and how much of its local work it finishes.
"""

from __future__ import annotations

import zlib

import attrs
import numpy as np

from fedsim.privacy.participation import Participation


class SamplingError(ValueError):
    """Raised when a cohort cannot be drawn (e.g. larger than the population)."""


def _check_cohort(cohort_size: int, population_size: int) -> None:
    if cohort_size > population_size:
        raise SamplingError(
            f"cohort_size={cohort_size} is larger than the population of "
            f"{population_size} clients; lower cohort_size to at most {population_size}"
        )


def _probability(instance, attribute, value):
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name}={value!r} must be a probability in [0, 1]")


def client_rng(seed: int, round_num: int, client_id: str | int) -> np.random.Generator:
    """A generator for one (round, client): string ids are hashed stably (CRC32), not with ``hash``."""
    key = zlib.crc32(str(client_id).encode("utf-8"))
    return np.random.default_rng([seed, round_num, key])


@attrs.frozen
class UniformSampler:
    """Draws ``cohort_size`` distinct clients uniformly at random each round."""

    cohort_size: int = attrs.field(validator=attrs.validators.gt(0))
    seed: int = 0

    def sample(self, round_num: int, population_size: int) -> np.ndarray:
        """Indices into the population for round ``round_num`` (1-based)."""
        _check_cohort(self.cohort_size, population_size)
        rng = np.random.default_rng([self.seed, round_num])
        return rng.choice(population_size, self.cohort_size, replace=False)

    def participation(self, population_size: int) -> Participation:
        """A fixed-size cohort drawn uniformly without replacement."""
        _check_cohort(self.cohort_size, population_size)
        return Participation.fixed_size(population_size, self.cohort_size)


@attrs.frozen
class PoissonSampler:
    """Each client takes part independently with probability ``rate`` each round.

    The sampling of DP-SGD and DP-FedAvg's analysis (McMahan et al. 2018): the
    cohort size varies (it can be 0, an ordinary round) around ``rate * N``.
    """

    rate: float = attrs.field(converter=float)
    seed: int = 0

    @rate.validator
    def _check_rate(self, attribute, value):
        if not 0 < value <= 1:
            raise SamplingError(f"rate={value!r} must be a probability in (0, 1]; it is each client's chance per round")

    def sample(self, round_num: int, population_size: int) -> np.ndarray:
        """Indices into the population for round ``round_num`` (1-based), in population order."""
        rng = np.random.default_rng([self.seed, round_num])
        return np.flatnonzero(rng.random(population_size) < self.rate)

    def participation(self, population_size: int) -> Participation:
        return Participation.poisson(population_size, self.rate)


@attrs.frozen
class WeightedSampler:
    """Draws ``cohort_size`` distinct clients with probability proportional to ``client_weights``.

    ``client_weights`` holds one non-negative number per client of the population,
    in population order (e.g. example counts: ``[data.num_examples(c) for c in data.client_ids]``).
    Without replacement: each draw picks among the clients not drawn yet,
    proportionally to their weights (NumPy's sequential weighted draw).
    """

    cohort_size: int = attrs.field(validator=attrs.validators.gt(0))
    client_weights: np.ndarray = attrs.field(converter=lambda w: np.asarray(w, dtype=np.float64))
    seed: int = 0

    @client_weights.validator
    def _check_weights(self, attribute, value):
        if value.ndim != 1 or not np.all(np.isfinite(value)) or np.any(value < 0):
            raise ValueError(
                "client_weights must be a 1-D sequence of finite numbers >= 0, one per client"
            )
        if np.count_nonzero(value) < self.cohort_size:
            raise ValueError(
                f"only {np.count_nonzero(value)} clients have a weight > 0, fewer than "
                f"cohort_size={self.cohort_size}; lower cohort_size or drop empty clients"
            )

    def sample(self, round_num: int, population_size: int) -> np.ndarray:
        """Indices into the population for round ``round_num`` (1-based)."""
        if len(self.client_weights) != population_size:
            raise SamplingError(
                f"client_weights has {len(self.client_weights)} entries but the population has "
                f"{population_size} clients; give one weight per client"
            )
        _check_cohort(self.cohort_size, population_size)
        rng = np.random.default_rng([self.seed, round_num])
        probabilities = self.client_weights / self.client_weights.sum()
        return rng.choice(population_size, self.cohort_size, replace=False, p=probabilities)

    def participation(self, population_size: int) -> Participation:
        """Weighted draws claim no amplification: the weights make a client's chance data-dependent."""
        _check_cohort(self.cohort_size, population_size)
        return Participation.none(population_size, self.cohort_size)


@attrs.frozen
class RoundRobinSampler:
    """Walks the population in a fixed order, ``cohort_size`` clients per round, wrapping around.

    The order is a permutation of the population drawn once from ``seed``
    (``shuffle=False``: population order), so every client is visited once
    per ``ceil(population_size / cohort_size)`` rounds.
    """

    cohort_size: int = attrs.field(validator=attrs.validators.gt(0))
    seed: int = 0
    shuffle: bool = True

    def sample(self, round_num: int, population_size: int) -> np.ndarray:
        """Indices into the population for round ``round_num`` (1-based)."""
        _check_cohort(self.cohort_size, population_size)
        if self.shuffle:
            order = np.random.default_rng(self.seed).permutation(population_size)
        else:
            order = np.arange(population_size)
        start = (round_num - 1) * self.cohort_size
        return order[np.arange(start, start + self.cohort_size) % population_size]

    def participation(self, population_size: int) -> Participation:
        """No amplification (the order is fixed), but any ``N // m`` consecutive rounds are
        ``N // m * m <= N`` consecutive positions of one cyclic order: each client at most once."""
        _check_cohort(self.cohort_size, population_size)
        return Participation.none(population_size, self.cohort_size, epoch_rounds=population_size // self.cohort_size)


@attrs.frozen
class Dropout:
    """A sampled client fails to report with probability ``rate``, independently per (round, client)."""

    rate: float = attrs.field(converter=float, validator=_probability)
    seed: int = 0

    def reports(self, round_num: int, client_id: str | int) -> bool:
        """Whether ``client_id`` reports in round ``round_num``."""
        return bool(client_rng(self.seed, round_num, client_id).random() >= self.rate)


@attrs.frozen
class Stragglers:
    """With probability ``fraction`` a sampled client straggles: it finishes only part of its work.

    A straggler runs a uniformly random number of epochs in ``[1, local_epochs]``
    (the FedProx paper's systems heterogeneity, Li et al. 2020, section 5.2);
    other clients run all ``local_epochs``. Drawn per (seed, round, client id).
    """

    fraction: float = attrs.field(converter=float, validator=_probability)
    seed: int = 0

    def is_straggler(self, round_num: int, client_id: str | int) -> bool:
        """Whether ``client_id`` straggles in round ``round_num``."""
        return bool(client_rng(self.seed, round_num, client_id).random() < self.fraction)

    def local_epochs(self, round_num: int, client_id: str | int, local_epochs: int) -> int:
        """The epochs ``client_id`` completes in round ``round_num`` out of ``local_epochs``."""
        rng = client_rng(self.seed, round_num, client_id)
        if rng.random() >= self.fraction:
            return local_epochs
        return int(rng.integers(1, local_epochs, endpoint=True))
