"""Privacy accounting for DP-FedAvg with the ``dp_accounting`` package.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent
Language Models", ICLR 2018 (user-level DP-FedAvg); accountants from Google's
``dp_accounting``: Renyi DP (Mironov 2017) or privacy loss distributions.

Each round is one sampled Gaussian mechanism on the clipped sum with noise
multiplier ``z``: clients are sampled either by Poisson sampling with rate
``clients_per_round / population_size`` (add/remove-one neighbouring) or as a
fixed-size cohort without replacement (replace-one neighbouring, which is
what ``dp_accounting`` supports for that sampling, and only with RDP).
"""

from __future__ import annotations

import math

import attrs
import dp_accounting
from dp_accounting import pld, rdp

from fedsim.aggregators.validation import (
    AggregatorConfigError,
    in_interval,
    int_at_least,
    one_of,
)


@attrs.frozen
class DPAccounting:
    """How clients are sampled, and which accountant turns rounds into epsilon."""

    population_size: int = attrs.field(validator=int_at_least(1))
    clients_per_round: int = attrs.field(validator=int_at_least(1))
    sampling: str = attrs.field(default="poisson", validator=one_of("poisson", "fixed_size"))
    target_delta: float = attrs.field(
        default=1e-5, validator=in_interval(0.0, 1.0, closed_low=False)
    )
    accountant: str = attrs.field(default="rdp", validator=one_of("rdp", "pld"))

    def __attrs_post_init__(self) -> None:
        if self.clients_per_round > self.population_size:
            raise AggregatorConfigError(
                f"clients_per_round={self.clients_per_round} exceeds population_size="
                f"{self.population_size}; sample at most the whole population"
            )
        if self.accountant == "pld" and self.sampling == "fixed_size":
            raise AggregatorConfigError(
                "accountant='pld' does not support sampling='fixed_size' in dp_accounting; "
                "use accountant='rdp' or sampling='poisson'"
            )

    def round_event(self, noise_multiplier: float) -> dp_accounting.DpEvent:
        """The DP event of one round."""
        gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
        if self.sampling == "poisson":
            rate = self.clients_per_round / self.population_size
            return dp_accounting.PoissonSampledDpEvent(rate, gaussian)
        return dp_accounting.SampledWithoutReplacementDpEvent(
            self.population_size, self.clients_per_round, gaussian
        )

    def make_accountant(self) -> dp_accounting.PrivacyAccountant:
        relation = (
            dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
            if self.sampling == "poisson"
            else dp_accounting.NeighboringRelation.REPLACE_ONE
        )
        if self.accountant == "rdp":
            return rdp.RdpAccountant(neighboring_relation=relation)
        return pld.PLDAccountant(neighboring_relation=relation)

    def epsilon(self, noise_multiplier: float, rounds: int) -> float:
        """Epsilon at ``target_delta`` after ``rounds`` rounds (inf without noise)."""
        if rounds == 0:
            return 0.0
        if noise_multiplier == 0:
            return math.inf
        accountant = self.make_accountant()
        accountant.compose(self.round_event(noise_multiplier), rounds)
        return float(accountant.get_epsilon(self.target_delta))

    def find_noise_multiplier(
        self, target_epsilon: float, rounds: int, tolerance: float = 1e-3
    ) -> float:
        """Smallest noise multiplier (within ``tolerance``) whose epsilon after
        ``rounds`` rounds is at most ``target_epsilon``, by bisection."""
        if not target_epsilon > 0:
            raise AggregatorConfigError(f"target_epsilon={target_epsilon!r} must be > 0")
        low, high = 0.0, 1.0
        while self.epsilon(high, rounds) > target_epsilon:
            low, high = high, 2 * high
            if high > 1e6:
                raise AggregatorConfigError(
                    f"no noise multiplier up to 1e6 reaches target_epsilon={target_epsilon} "
                    f"in {rounds} rounds; raise the target or run fewer rounds"
                )
        # Invariant: epsilon(low) > target >= epsilon(high) (epsilon(0) is inf).
        while high - low > tolerance:
            middle = (low + high) / 2
            if self.epsilon(middle, rounds) > target_epsilon:
                low = middle
            else:
                high = middle
        return high
