"""How clients take part in rounds, as the accountant must know it.

A privacy guarantee is only as good as its sampling assumption, so the
``Participation`` of a run is read from the sampler and the population that
actually ran (``sampler.participation(population_size)``), never declared a
second time by hand. It fixes three things the accountant needs:

* the sampling that amplifies privacy: ``fixed_size`` (a cohort of ``m``
  distinct clients drawn uniformly without replacement, fedsim's ``uniform``
  sampler), ``poisson`` (each client independently with probability ``q``),
  or ``none`` (cohorts not drawn at random from the whole population, such as
  round robin, weighted or scheduled cohorts: no amplification is claimed);
* the neighbouring relation proved: replace-one for fixed-size cohorts (the
  only relation under which a fixed-size sample is meaningful), add/remove-one
  otherwise;
* the denominator of a private mean: the expected cohort size ``m`` or
  ``qN`` (McMahan et al. 2018), never the realised one, which would leak how
  many clients took part.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import attrs
import dp_accounting

SAMPLINGS = ("fixed_size", "poisson", "none")


class ParticipationError(ValueError):
    """A privacy mechanism's participation disagrees with the run (or is missing)."""


def _sampling(instance, attribute, value):
    if value not in SAMPLINGS:
        raise ParticipationError(f"sampling={value!r} is not one of {list(SAMPLINGS)}")


def _positive_int(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParticipationError(f"{attribute.name}={value!r} must be an integer >= 1")


@attrs.frozen
class Participation:
    """Sampling, population size and cohort size (or rate) of a run.

    Build it with ``fixed_size``, ``poisson`` or ``none``, or from a sampler:
    ``sampler.participation(len(population.client_ids))``.
    """

    sampling: str = attrs.field(validator=_sampling)
    population_size: int = attrs.field(validator=_positive_int)
    cohort_size: Optional[int] = None  # fixed_size and none
    rate: Optional[float] = None  # poisson
    # Every client takes part at most once in any ``epoch_rounds`` consecutive rounds
    # (round robin over N clients, m per round: N // m). DP-FTRL's accounting needs it.
    epoch_rounds: int = attrs.field(default=1, validator=_positive_int)

    def __attrs_post_init__(self) -> None:
        if self.sampling == "poisson":
            if self.rate is None or not 0 < self.rate <= 1 or self.cohort_size is not None:
                raise ParticipationError(
                    f"Poisson participation needs a rate q in (0, 1] and no cohort_size, got rate={self.rate!r}, "
                    f"cohort_size={self.cohort_size!r}"
                )
            return
        if self.rate is not None:
            raise ParticipationError(f"sampling={self.sampling!r} has a cohort size, not a rate (got rate={self.rate!r})")
        _positive_int(self, attrs.fields(Participation).cohort_size, self.cohort_size)
        if self.cohort_size > self.population_size:
            raise ParticipationError(
                f"cohort_size={self.cohort_size} is larger than population_size={self.population_size}; "
                f"a cohort holds at most the whole population"
            )

    @classmethod
    def fixed_size(cls, population_size: int, cohort_size: int) -> "Participation":
        """``cohort_size`` distinct clients drawn uniformly without replacement each round."""
        return cls("fixed_size", population_size, cohort_size=cohort_size)

    @classmethod
    def poisson(cls, population_size: int, rate: float) -> "Participation":
        """Each client takes part independently with probability ``rate`` each round."""
        return cls("poisson", population_size, rate=float(rate))

    @classmethod
    def none(cls, population_size: int, cohort_size: int, epoch_rounds: int = 1) -> "Participation":
        """Cohorts of ``cohort_size`` not drawn at random (no amplification by sampling); with
        ``epoch_rounds`` > 1 every client takes part at most once in that many consecutive rounds."""
        return cls("none", population_size, cohort_size=cohort_size, epoch_rounds=epoch_rounds)

    @property
    def expected_cohort_size(self) -> float:
        """The denominator of a private mean: ``m``, or ``qN`` under Poisson sampling."""
        if self.sampling == "poisson":
            return self.rate * self.population_size
        return float(self.cohort_size)

    @property
    def relation(self) -> dp_accounting.NeighboringRelation:
        """The neighbouring relation the guarantee is proved for."""
        if self.sampling == "fixed_size":
            return dp_accounting.NeighboringRelation.REPLACE_ONE
        return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

    @property
    def relation_name(self) -> str:
        return "replace_one" if self.sampling == "fixed_size" else "add_or_remove_one"

    @property
    def sensitivity_factor(self) -> float:
        """L2 sensitivity of a sum of values clipped to C, in units of C.

        Replacing one client moves the sum by up to 2C (``+v' - v``); adding or
        removing one moves it by up to C.
        """
        return 2.0 if self.sampling == "fixed_size" else 1.0

    def sampled(self, event: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
        """One round's event: ``event`` applied to the cohort this sampling draws."""
        if self.sampling == "poisson":
            return dp_accounting.PoissonSampledDpEvent(self.rate, event)
        if self.sampling == "fixed_size":
            return dp_accounting.SampledWithoutReplacementDpEvent(self.population_size, self.cohort_size, event)
        return event

    @classmethod
    def declared(cls, population_size: int, clients_per_round: int, sampling: str) -> "Participation":
        """From the three values older configs declared by hand (Poisson: rate = m / N)."""
        if sampling == "poisson":
            return cls.poisson(population_size, clients_per_round / population_size)
        return cls(sampling, population_size, cohort_size=clients_per_round)

    def describe(self) -> dict[str, Any]:
        """The facts a reader of a privacy claim needs, as plain values."""
        size = {"rate": self.rate} if self.sampling == "poisson" else {"cohort_size": self.cohort_size}
        epoch = {"epoch_rounds": self.epoch_rounds} if self.epoch_rounds > 1 else {}
        return {"sampling": self.sampling, "population_size": self.population_size, **size, **epoch,
                "relation": self.relation_name}

    def check_declared(self, owner: str, **declared: Any) -> None:
        """Raises when a value declared by hand (``population_size``, ``clients_per_round``,
        ``sampling``, ``rate``) disagrees with this, the run's participation."""
        actual = {"population_size": self.population_size, "sampling": self.sampling,
                  "clients_per_round": self.expected_cohort_size, "rate": self.rate}
        for name, value in declared.items():
            if value is None:
                continue
            if name not in actual:
                raise ParticipationError(f"{owner}: cannot declare {name!r}; it is read from the run")
            matches = value == actual[name] or (
                isinstance(value, (int, float)) and actual[name] is not None
                and math.isclose(value, actual[name], rel_tol=1e-9))
            if not matches:
                raise ParticipationError(
                    f"{owner}: declares {name}={value!r}, but the run has {name}={actual[name]!r} "
                    f"({self.describe()}); remove {name!r} from the config (it is read from the sampler "
                    f"and the population) or make the run match it"
                )
