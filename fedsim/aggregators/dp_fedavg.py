"""DP-FedAvg: clipped, noised mean over the expected cohort, with fixed or private adaptive clipping.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent
Language Models", ICLR 2018; adaptive clipping: Andrew, Thakkar, McMahan,
Ramaswamy, "Differentially Private Learning with Adaptive Clipping", NeurIPS
2021 (Algorithm 1).

Each participating client value is clipped to the clip norm C; the clipped
values are summed (every client counts once), Gaussian noise of std
``z_update * C`` is added to each coordinate of the sum, and the sum is divided
by the *expected* cohort size (``m``, or ``qN`` under Poisson sampling): a
data-dependent denominator would leak how many clients took part.

With ``target_quantile`` set, C adapts privately: every client also reports
whether its norm was at most C (``b_i``); the server adds Gaussian noise of
std ``sigma_b`` to the centred count ``sum(b_i - 1/2)`` and moves C
geometrically towards the target quantile:
``C <- C * exp(-clip_learning_rate * (b_noisy - target_quantile))``. The update
and the count together form one Gaussian mechanism of noise multiplier
``noise_multiplier`` (z): the update's own multiplier is
``z_update = (z**-2 - (2 sigma_b)**-2) ** -1/2`` (the count has sensitivity
1/2), which is what the accountant charges.

The accountant sees the noise multiplier divided by the run's sensitivity
factor: replacing one client (fixed-size cohorts) moves the clipped sum by up
to 2C, adding or removing one by C (see ``fedsim.privacy.participation``).
Clipping is done here rather than by an outer ``Clipping`` wrapper on purpose:
the noise is calibrated to the clip norm, so they cannot be configured apart.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import attrs
import dp_accounting
import numpy as np

from fedsim.aggregators.base import (
    AggregationOutput,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.clipping import clipped_sum
from fedsim.aggregators.validation import (
    AggregatorConfigError,
    in_interval,
    int_at_least,
    non_negative,
    one_of,
    optional_quantile,
    positive,
)
from fedsim.aggregators.vectors import global_norm, participating, unflatten
from fedsim.privacy import mechanism
from fedsim.privacy.accounting import ACCOUNTANTS, check_accountant
from fedsim.privacy.participation import SAMPLINGS, Participation

# Stream tags: the update's noise and the count's noise are independent draws.
_UPDATE_NOISE, _COUNT_NOISE = 0, 1


def _optional(validator):
    return attrs.validators.optional(validator)


@attrs.frozen
class DPFedAvg:
    """Differentially private mean of client values (user-level DP), fixed or adaptive clip norm.

    ``participation`` is the run's (``sampler.participation(population_size)``);
    a config run binds it. ``population_size``, ``clients_per_round`` and
    ``sampling`` may still be declared, and must then match the run.
    """

    clip_norm: float = attrs.field(validator=positive)
    noise_multiplier: float = attrs.field(validator=non_negative)
    target_quantile: Optional[float] = attrs.field(default=None, validator=optional_quantile)
    clip_learning_rate: float = attrs.field(default=0.2, validator=positive)
    clipped_count_stddev: Optional[float] = attrs.field(default=None, validator=_optional(positive))
    target_delta: float = attrs.field(default=1e-5, validator=in_interval(0.0, 1.0, closed_low=False))
    accountant: str = attrs.field(default="rdp", validator=one_of(*ACCOUNTANTS))
    seed: int = attrs.field(default=0, validator=int_at_least(0))
    participation: Optional[Participation] = None
    population_size: Optional[int] = attrs.field(default=None, validator=_optional(int_at_least(1)))
    clients_per_round: Optional[int] = attrs.field(default=None, validator=_optional(int_at_least(1)))
    sampling: Optional[str] = attrs.field(default=None, validator=_optional(one_of(*SAMPLINGS)))

    def __attrs_post_init__(self) -> None:
        declared = {"population_size": self.population_size, "clients_per_round": self.clients_per_round,
                    "sampling": self.sampling}
        if self.participation is not None:
            self.participation.check_declared(type(self).__name__, **declared)
        elif all(v is not None for v in declared.values()):
            object.__setattr__(self, "participation", Participation.declared(**declared))
        if self.participation is not None:
            check_accountant(self.accountant, self.participation.sampling)
            if self.target_quantile is not None and self.noise_multiplier > 0 and not (
                2 * self.count_stddev > self.noise_multiplier
            ):
                raise AggregatorConfigError(
                    f"DPFedAvg: clipped_count_stddev={self.count_stddev:g} leaves no noise for the update: "
                    f"adaptive clipping needs 2 * clipped_count_stddev > noise_multiplier={self.noise_multiplier}; "
                    "raise clipped_count_stddev (Andrew et al. use expected cohort size / 20) or lower the noise"
                )

    # What the accountant and the report read ------------------------------------
    @property
    def count_stddev(self) -> float:
        """sigma_b, the std of the noise on the clipped count (default: expected cohort / 20)."""
        if self.clipped_count_stddev is not None:
            return self.clipped_count_stddev
        return self._participation().expected_cohort_size / 20

    @property
    def update_noise_multiplier(self) -> float:
        """z_update: the update's own noise multiplier (z itself with a fixed clip norm)."""
        z = self.noise_multiplier
        if self.target_quantile is None or z == 0:
            return z
        return (z**-2 - (2 * self.count_stddev) ** -2) ** -0.5

    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        """``rounds`` rounds of the sampled Gaussian mechanism (update and count as one, multiplier z)."""
        if rounds == 0:
            return dp_accounting.NoOpDpEvent()
        if self.noise_multiplier == 0:
            return dp_accounting.NonPrivateDpEvent()
        participation = self._participation()
        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier / participation.sensitivity_factor)
        return dp_accounting.SelfComposedDpEvent(participation.sampled(gaussian), rounds)

    def epsilon(self, rounds: int) -> float:
        """Epsilon at ``target_delta`` after ``rounds`` rounds."""
        return mechanism.epsilon(self, rounds)

    def rounds(self, state: AggregatorState) -> int:
        return int(state["round"])

    def describe(self) -> dict[str, Any]:
        facts = {"noise_multiplier": self.noise_multiplier, "clip_norm": self.clip_norm,
                 "sensitivity": f"{self._participation().sensitivity_factor:g} * clip_norm"}
        if self.target_quantile is not None:
            facts.update(clipping="adaptive", target_quantile=self.target_quantile,
                         clip_learning_rate=self.clip_learning_rate, clipped_count_stddev=self.count_stddev,
                         update_noise_multiplier=self.update_noise_multiplier)
        return facts

    def _participation(self) -> Participation:
        return mechanism.participation_of(self)

    # The aggregator ---------------------------------------------------------------
    def initialize(self) -> AggregatorState:
        return {"seed": self.seed, "round": 0, "clip_norm": float(self.clip_norm)}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        denominator = self._participation().expected_cohort_size
        weights = check_client_values(client_values, update_weights)
        values, _ = participating(client_values, weights)
        clip_norm = float(state["clip_norm"])
        total, num_clipped = clipped_sum(values, clip_norm, sum(np.size(a) for a in client_values[0]))
        seed, round_num = state["seed"], state["round"]
        update_std = self.update_noise_multiplier * clip_norm
        total += np.random.default_rng([seed, round_num, _UPDATE_NOISE]).normal(0.0, update_std, size=total.shape)
        rounds = round_num + 1
        measurements = {
            # Not "clip/...": an outer Clipping wrapper reports under that prefix.
            "dp/clip_norm": clip_norm,
            "dp/num_clipped": float(num_clipped),
            "dp/num_clients": float(len(values)),
            "dp/noise_std": update_std / denominator,
            "dp/epsilon": self.epsilon(rounds),
            "dp/delta": self.target_delta,
        }
        new_state = {"seed": seed, "round": rounds, "clip_norm": clip_norm}
        if self.target_quantile is not None:
            unclipped = self._noisy_unclipped_fraction(values, clip_norm, seed, round_num, denominator)
            new_state["clip_norm"] = clip_norm * math.exp(-self.clip_learning_rate * (unclipped - self.target_quantile))
            measurements["dp/unclipped_fraction"] = unclipped
        return AggregationOutput(unflatten(total / denominator, client_values[0]), new_state, measurements)

    def _noisy_unclipped_fraction(self, values, clip_norm: float, seed: int, round_num: int, denominator: float) -> float:
        """Andrew et al.'s private estimate of the fraction of clients with norm <= C.

        The count is centred (each client adds ``b_i - 1/2``), so one client moves
        it by at most 1/2 and the noise std is ``sigma_b``.
        """
        centred = sum((global_norm(v) <= clip_norm) - 0.5 for v in values)
        noise = np.random.default_rng([seed, round_num, _COUNT_NOISE]).normal(0.0, self.count_stddev)
        return float((centred + noise) / denominator + 0.5)
