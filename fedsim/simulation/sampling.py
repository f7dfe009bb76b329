"""Cohort sampling and client availability, deterministic from the run's seed.

Samplers answer ``sample(round_num, population_size) -> indices``, and
``participation(population_size)``: what their draws prove to a privacy
accountant (``fedsim.privacy.Participation``). Round ``r``'s draw depends only
on ``(seed, r)``, so a resumed run draws the same cohorts as
an uninterrupted one without carrying generator state. ``Dropout`` and
``Stragglers`` decide, per ``(seed, round, client id)``, whether a sampled
client reports at all and how much of its local work it finishes.
``ScheduleSampler`` draws nothing: it replays the cohorts a file states.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Sequence

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


class ScheduleError(SamplingError):
    """A cohort schedule that cannot run: an unreadable file, an unknown client, too few rounds."""


def _as_cohorts(cohorts: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(cohort, dtype=np.int64).reshape(-1) for cohort in cohorts)


@attrs.frozen
class ScheduleSampler:
    """Fixed cohorts, as a paper's or another framework's protocol states them: nothing is drawn.

    Round ``r`` (1-based) takes ``cohorts[r - 1]``, positions into the
    population, in the order given. A round may have an empty cohort. Build one from a file with :meth:`from_file`.
    """

    cohorts: tuple[np.ndarray, ...] = attrs.field(converter=_as_cohorts)
    source: str = "the schedule"  # where the cohorts came from, for error messages

    def __attrs_post_init__(self) -> None:
        if not self.cohorts or not any(len(cohort) for cohort in self.cohorts):
            raise ScheduleError(f"{self.source} holds no client in any round; give one list of clients per round")
        for round_num, cohort in enumerate(self.cohorts, start=1):
            if cohort.size and cohort.min() < 0:
                raise ScheduleError(f"{self.source}: round {round_num} has position {int(cohort.min())}; "
                                    "positions count from 0")
            values, counts = np.unique(cohort, return_counts=True)
            if np.any(counts > 1):
                raise ScheduleError(
                    f"{self.source}: round {round_num} lists client {int(values[counts > 1][0])} more than once; "
                    "a cohort holds distinct clients"
                )

    @property
    def num_rounds(self) -> int:
        """How many rounds the schedule covers."""
        return len(self.cohorts)

    @property
    def largest_cohort(self) -> int:
        return max(len(cohort) for cohort in self.cohorts)

    def check_rounds(self, rounds: int) -> None:
        """Raises ``ScheduleError`` if a run of ``rounds`` rounds would outlast the schedule."""
        if rounds > self.num_rounds:
            raise ScheduleError(
                f"the run has {rounds} rounds but {self.source} schedules {self.num_rounds}; "
                f"set rounds to at most {self.num_rounds}, or add a cohort for every round"
            )

    def sample(self, round_num: int, population_size: int) -> np.ndarray:
        """Positions in the population of round ``round_num``'s cohort (1-based rounds)."""
        self.check_rounds(round_num)
        cohort = self.cohorts[round_num - 1]
        if cohort.size and cohort.max() >= population_size:
            raise ScheduleError(
                f"{self.source}: round {round_num} has position {int(cohort.max())}, but the population "
                f"has {population_size} clients (positions 0 .. {population_size - 1})"
            )
        return cohort.copy()

    def participation(self, population_size: int) -> Participation:
        """No amplification (the cohorts are fixed, not drawn); a cohort counts as the largest one."""
        _check_cohort(self.largest_cohort, population_size)
        return Participation.none(population_size, self.largest_cohort)

    @classmethod
    def from_file(cls, path: str | os.PathLike, client_ids: Sequence[str]) -> "ScheduleSampler":
        """The schedule in ``path``, for the population whose ids (in order) are ``client_ids``.

        - ``.json``: ``[[id, id, ...], ...]``, one list of client ids per
          round. Ids are what researchers have (LEAF writers, TFF client ids);
          a JSON number ``n`` stands for the id ``"n"`` (fedsim names the
          clients of generated and partitioned data ``"0"``, ``"1"``, ...),
          never for a position.
        - ``.npy``: a 2-D integer array, row ``r - 1`` the positions (into
          ``client_ids``) of round ``r``'s cohort.

        Raises:
          ScheduleError: naming the file and the unreadable entry, or every unknown id.
        """
        path = Path(path)
        if not path.is_file():
            raise ScheduleError(f"sampler.path={str(path)!r}: no such file; give a .json or .npy cohort schedule")
        suffix = path.suffix.lower()
        if suffix == ".json":
            cohorts = _positions_of(_read_json_schedule(path), client_ids, path)
        elif suffix == ".npy":
            cohorts = _read_npy_schedule(path, len(client_ids))
        else:
            raise ScheduleError(f"sampler.path={str(path)!r}: a schedule is a .json list of client-id lists "
                                "or a 2-D .npy array of positions; rename or convert the file")
        return cls(cohorts, source=str(path))


def _read_json_schedule(path: Path) -> list[list[str]]:
    try:
        rounds = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ScheduleError(f"cannot read {path} as JSON: {error}") from None
    if not isinstance(rounds, list) or not all(isinstance(cohort, list) for cohort in rounds):
        raise ScheduleError(
            f"{path} must hold a list with one list of client ids per round, e.g. [[\"f0001\", \"f0007\"], "
            f"[\"f0003\"]]; got {type(rounds).__name__} at the top level or in a round"
        )
    for round_num, cohort in enumerate(rounds, start=1):
        for client_id in cohort:
            # bool is an int in Python, and 3.0 is not an id: only strings and whole numbers name clients.
            if isinstance(client_id, bool) or not isinstance(client_id, (str, int)):
                raise ScheduleError(f"{path}: round {round_num} has {client_id!r}; client ids are strings "
                                    "(or whole numbers, read as their digits)")
    return [[str(client_id) for client_id in cohort] for cohort in rounds]


def _positions_of(rounds: list[list[str]], client_ids: Sequence[str], path: Path) -> list[list[int]]:
    unknown = [(r, c) for r, cohort in enumerate(rounds, start=1) for c in cohort if c not in client_ids]
    if unknown:
        listed = ", ".join(f"{c!r} (round {r})" for r, c in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ScheduleError(
            f"{path} names clients the population does not have: {listed}{more}. The population has "
            f"{len(client_ids)} clients, e.g. {list(client_ids[:3])}; use those ids"
        )
    return [[client_ids.index(c) for c in cohort] for cohort in rounds]


def _read_npy_schedule(path: Path, population_size: int) -> np.ndarray:
    try:
        positions = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ScheduleError(f"cannot read {path} as a .npy array: {error}") from None
    if positions.ndim != 2 or not np.issubdtype(positions.dtype, np.integer):
        raise ScheduleError(
            f"{path} holds a {positions.dtype} array of shape {positions.shape}; a .npy schedule is a 2-D "
            "integer array, one row of population positions per round (for cohorts of varying size, "
            "use a .json list of client-id lists)"
        )
    if positions.size and (positions.min() < 0 or positions.max() >= population_size):
        bad = positions[(positions < 0) | (positions >= population_size)][0]
        raise ScheduleError(f"{path} has position {int(bad)}, outside the population's 0 .. {population_size - 1}")
    return positions


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
