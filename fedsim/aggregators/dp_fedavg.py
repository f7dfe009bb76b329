"""DP-FedAvg: clipped, noised, fixed-denominator mean with privacy accounting.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent
Language Models", ICLR 2018.

Each participating client value is clipped to ``clip_norm``; the clipped
values are summed (every participating client counts once, so one client's
contribution to the sum is bounded by ``clip_norm``), Gaussian noise with
std ``noise_multiplier * clip_norm`` is added to each coordinate of the sum,
and the sum is divided by the *expected* cohort size ``clients_per_round``.
A data-dependent denominator would leak how many clients took part.

Clipping is done here rather than by an outer ``Clipping`` wrapper on purpose:
the noise is calibrated to the clip norm, and keeping both in one object means
they cannot be configured apart.
"""

from __future__ import annotations

from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators.accounting import DPAccounting
from fedsim.aggregators.base import (
    AggregationOutput,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.clipping import clip
from fedsim.aggregators.validation import (
    in_interval,
    int_at_least,
    non_negative,
    one_of,
    positive,
)
from fedsim.aggregators.vectors import flatten, participating, unflatten


@attrs.frozen
class DPFedAvg:
    """Differentially private mean of client values (user-level DP)."""

    clip_norm: float = attrs.field(validator=positive)
    noise_multiplier: float = attrs.field(validator=non_negative)
    population_size: int = attrs.field(validator=int_at_least(1))
    clients_per_round: int = attrs.field(validator=int_at_least(1))
    sampling: str = attrs.field(default="poisson", validator=one_of("poisson", "fixed_size"))
    target_delta: float = attrs.field(
        default=1e-5, validator=in_interval(0.0, 1.0, closed_low=False)
    )
    accountant: str = attrs.field(default="rdp", validator=one_of("rdp", "pld"))
    seed: int = attrs.field(default=0, validator=int_at_least(0))
    accounting: DPAccounting = attrs.field(init=False)

    @accounting.default
    def _accounting(self) -> DPAccounting:
        return DPAccounting(
            self.population_size,
            self.clients_per_round,
            self.sampling,
            self.target_delta,
            self.accountant,
        )

    @property
    def noise_std(self) -> float:
        """Std of the noise on each coordinate of the result (after division)."""
        return self.noise_multiplier * self.clip_norm / self.clients_per_round

    def initialize(self) -> AggregatorState:
        return {"seed": self.seed, "round": 0}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        values, _ = participating(client_values, weights)
        total = np.zeros(sum(np.size(a) for a in client_values[0]))
        num_clipped = 0
        for value in values:
            clipped, was_clipped = clip(value, self.clip_norm)
            total += flatten(clipped)
            num_clipped += was_clipped
        rng = np.random.default_rng([state["seed"], state["round"]])
        total += rng.normal(0.0, self.noise_multiplier * self.clip_norm, size=total.shape)
        result = unflatten(total / self.clients_per_round, client_values[0])
        rounds = state["round"] + 1
        measurements = {
            # Not "clip/...": an outer Clipping wrapper reports under that prefix.
            "dp/clip_norm": self.clip_norm,
            "dp/num_clipped": float(num_clipped),
            "dp/num_clients": float(len(values)),
            "dp/noise_std": self.noise_std,
            "dp/epsilon": self.accounting.epsilon(self.noise_multiplier, rounds),
            "dp/delta": self.target_delta,
        }
        return AggregationOutput(result, {"seed": state["seed"], "round": rounds}, measurements)
