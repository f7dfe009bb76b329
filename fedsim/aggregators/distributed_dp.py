"""Distributed DP through secure aggregation: the distributed discrete Gaussian mechanism.

Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation", ICML 2021, Algorithms 1 and 2.
With ``n`` the expected cohort size, ``C`` the clip norm, ``z`` the noise
multiplier and ``d`` the dimension padded to a power of two, each client:
clips to L2 norm ``C``; rotates by the randomized Hadamard transform of the
round (signs shared by all clients); divides by the granularity ``gamma`` and
rounds at random (unbiased), redrawing until the norm is at most ``Delta /
gamma`` (conditional rounding; ``Delta`` in ``discrete_gaussian.inflated_norm``);
adds ``N_Z(0, sigma^2)`` per coordinate with ``sigma = z C / (sqrt(n) gamma)``
grid steps (``n`` shares give DP-FedAvg's central std ``z C``); reduces modulo
``2**bits``. ``secure_sum`` gives the server the modular sum of the clients
whose masked input arrived; it centres it in ``[-2**(bits-1), 2**(bits-1))``,
multiplies by ``gamma``, rotates back and divides by ``n`` (data-independent,
as DP-FedAvg; dropped clients contribute nothing). Every client counts once.

Granularity: ``k`` standard deviations (two-sided normal tail ``modclip_prob``)
of each coordinate of the sum must fit in the modulus, with the rotation's
flatness ``rho = 1`` (the paper's Section 4 heuristic, as TFF's
DistributedDpSumFactory solves it):
``2**bits = 2 k sqrt(C^2 n^2 / d + (gamma^2 / 4 + sigma_c^2) n) / gamma``,
``sigma_c = z C / sqrt(n)``, so
``gamma = 2 k sqrt(C^2 n^2 / d + (z C)^2) / sqrt(4**bits - n k^2)``.

Privacy (``discrete_gaussian.summed_rdp``): sensitivity ``f Delta`` with
``f = 2`` under replace-one and ``1`` otherwise, where removing a client means
zeroing its update while it still adds its noise share: the server sees who
takes part, so participation is not hidden, and no amplification by sampling
is claimed. The noise counted is that of ``threshold`` clients, the fewest
whose sum is released; ``tau`` uses the most that can be summed (the cohort,
or the population under Poisson sampling), as it grows with the count.
``dp_event`` is a Gaussian of multiplier ``1 / (s + tau sqrt(d))``, whose
Renyi curve is the bound's second term: an upper bound for the RDP
accountant only (PLD is refused). ``rdp_epsilon`` uses the whole bound.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Optional, Sequence

import attrs
import dp_accounting
import numpy as np

from fedsim.aggregators.base import (AggregationOutput, AggregatorState,
                                     ClientIds, ClientValue, check_client_values)
from fedsim.aggregators.clipping import clip
from fedsim.aggregators.rotation import padded_size, rotate, unrotate
from fedsim.aggregators.secure_aggregation import PhaseDropout, secure_sum
from fedsim.aggregators.secure_sum import protocol_measurements
from fedsim.aggregators.validation import (AggregatorConfigError, in_interval, int_at_least,
                                           non_negative, positive)
from fedsim.aggregators.vectors import flatten, participating, unflatten, zeros_like
from fedsim.privacy import discrete_gaussian as dgauss
from fedsim.privacy import mechanism
from fedsim.privacy.participation import Participation

_ROTATION, _ROUNDING, _NOISE = 10, 11, 12  # stream tags; secure_sum uses 0, 2 and 3
_fraction = in_interval(0.0, 1.0)
_open_fraction = in_interval(0.0, 1.0, closed_low=False)
_optional_count = attrs.validators.optional(int_at_least(2))


def granularity(clip_norm: float, central_std: float, bits: int, cohort: float,
                dimension: int, k: float) -> float:
    """gamma such that ``k`` standard deviations of each coordinate of the sum fit in 2**bits."""
    room = 4.0**bits - cohort * k**2
    if room <= 0:
        raise AggregatorConfigError(
            f"DistributedDP: bits={bits} leave no room for {cohort:g} clients at {k:.2f} standard "
            "deviations (4**bits must exceed cohort * k^2); raise bits or modclip_prob")
    spread = clip_norm**2 * cohort**2 / dimension + central_std**2
    return 2 * k * math.sqrt(spread) / math.sqrt(room)


@attrs.frozen
class Plan:
    """One round's encoding, all derived from the config."""

    padded_dimension: int
    gamma: float  # granularity: one grid step, in the units of the client values
    sigma: float  # per-client noise std, in grid steps
    inflated_norm: float  # Delta, in the units of the client values


def _rdp_only(instance, attribute, value):
    if value != "rdp":
        raise AggregatorConfigError(
            f"DistributedDP: accountant={value!r} is not supported: the distributed discrete "
            "Gaussian's guarantee is a Renyi-DP bound (Kairouz et al. 2021); use accountant='rdp'")


@attrs.frozen
class DistributedDP:
    """Mean of client values under the distributed discrete Gaussian and secure aggregation.

    ``dimension``: coordinates of a client value (the model's trainable parameter
    count), on which granularity and epsilon depend. ``threshold``: the fewest
    clients secure aggregation sums (default ``max(2, ceil(2n/3))``); a round with
    fewer aborts. ``dropout_fraction`` drops clients at masked-input collection,
    ``*_dropout`` in the other phases, as in ``SecureAggregation``.
    """

    clip_norm: float = attrs.field(validator=positive)
    noise_multiplier: float = attrs.field(validator=non_negative)
    dimension: Optional[int] = attrs.field(
        default=None, validator=attrs.validators.optional(int_at_least(1)))
    bits: int = attrs.field(default=16, validator=int_at_least(2))
    beta: float = attrs.field(default=math.exp(-0.5), validator=_fraction)
    modclip_prob: float = attrs.field(default=1e-4, validator=_open_fraction)
    threshold: Optional[int] = attrs.field(default=None, validator=_optional_count)
    dropout_fraction: float = attrs.field(default=0.0, validator=_fraction)
    advertise_keys_dropout: float = attrs.field(default=0.0, validator=_fraction)
    share_keys_dropout: float = attrs.field(default=0.0, validator=_fraction)
    unmasking_dropout: float = attrs.field(default=0.0, validator=_fraction)
    target_delta: float = attrs.field(default=1e-5, validator=_open_fraction)
    accountant: str = attrs.field(default="rdp", validator=_rdp_only)
    seed: int = attrs.field(default=0, validator=int_at_least(0))
    participation: Optional[Participation] = None

    def __attrs_post_init__(self) -> None:
        if self.bits > 48:
            raise AggregatorConfigError(f"DistributedDP: bits={self.bits} must be <= 48 (float64 "
                                        "rounding needs headroom); lower bits")
        if self.participation is None:
            return
        # Raises when the modulus has no room for the cohort, whatever the dimension.
        granularity(self.clip_norm, 0.0, self.bits, self.participation.expected_cohort_size, 1,
                    self.k_stddevs)
        if self.min_survivors > self._largest_cohort():
            raise AggregatorConfigError(
                f"DistributedDP: threshold={self.min_survivors} exceeds the largest cohort "
                f"({self._largest_cohort()}), so every round would abort; lower threshold")
        if self.dimension is not None and self.noise_multiplier > 0 and self.plan().sigma < 0.5:
            raise AggregatorConfigError(
                f"DistributedDP: each client's noise is {self.plan().sigma:.3g} grid steps; below "
                "1/2 the tau term makes epsilon useless; raise bits or noise_multiplier")

    # Derived figures -----------------------------------------------------------------
    @property
    def dropout(self) -> PhaseDropout:
        return PhaseDropout(advertise_keys=self.advertise_keys_dropout,
                            share_keys=self.share_keys_dropout,
                            masked_input=self.dropout_fraction, unmasking=self.unmasking_dropout)

    @property
    def k_stddevs(self) -> float:
        """k: a normal coordinate leaves [-k, k] standard deviations w.p. ``modclip_prob``."""
        return NormalDist().inv_cdf(1 - self.modclip_prob / 2)

    @property
    def min_survivors(self) -> int:
        """The fewest clients whose sum secure aggregation releases: the noise counted."""
        if self.threshold is not None:
            return self.threshold
        return max(2, math.ceil(2 / 3 * self._participation().expected_cohort_size - 1e-9))

    def plan(self) -> Plan:
        """Granularity, per-client noise and inflated norm for the configured dimension."""
        if self.dimension is None:
            raise AggregatorConfigError(
                "DistributedDP needs dimension=, the number of coordinates of a client value "
                "(the model's trainable parameter count): granularity and epsilon depend on it")
        cohort = self._participation().expected_cohort_size
        padded, central_std = padded_size(self.dimension), self.noise_multiplier * self.clip_norm
        gamma = granularity(self.clip_norm, central_std, self.bits, cohort, padded, self.k_stddevs)
        sigma = central_std / math.sqrt(cohort) / gamma
        inflated = dgauss.inflated_norm(self.clip_norm, gamma, self.beta, padded)
        return Plan(padded, gamma, sigma, inflated)

    def _accounting(self) -> tuple[float, float, int]:
        """(s, tau, d) of the Renyi bound of one round."""
        plan = self.plan()
        sensitivity = self._participation().sensitivity_factor * plan.inflated_norm / plan.gamma
        scale = sensitivity / (math.sqrt(self.min_survivors) * plan.sigma)
        return scale, dgauss.tau(plan.sigma, self._largest_cohort()), plan.padded_dimension

    # The mechanism protocol ------------------------------------------------------------
    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        """``rounds`` Gaussian events whose Renyi curve bounds this mechanism's."""
        if rounds == 0:
            return dp_accounting.NoOpDpEvent()
        if self.noise_multiplier == 0:
            return dp_accounting.NonPrivateDpEvent()
        scale, tau, dimension = self._accounting()
        gaussian = dp_accounting.GaussianDpEvent(1 / (scale + tau * math.sqrt(dimension)))
        return dp_accounting.SelfComposedDpEvent(gaussian, rounds)

    def rdp_epsilon(self, rounds: int) -> float:
        """Epsilon at ``target_delta`` from the whole Renyi bound composed over ``rounds``."""
        if rounds == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        scale, tau, dimension = self._accounting()
        rdp = rounds * dgauss.summed_rdp(dgauss.ORDERS, scale, tau, dimension)
        return dgauss.epsilon_from_rdp(dgauss.ORDERS, rdp, self.target_delta)

    def epsilon(self, rounds: int) -> float:
        return mechanism.epsilon(self, rounds)

    def rounds(self, state: AggregatorState) -> int:
        return int(state["round"])

    def describe(self) -> dict[str, Any]:
        replace = self._participation().sensitivity_factor == 2
        sensitivity = ("2 * inflated clip norm (one client's update replaced)" if replace else
                       "1 * inflated clip norm (one client's update zeroed, its noise share kept)")
        facts = {"noise_multiplier": self.noise_multiplier, "clip_norm": self.clip_norm,
                 "bits": self.bits, "beta": self.beta, "threshold": self.min_survivors,
                 "amplification": "none (the server sees the cohort)", "sensitivity": sensitivity}
        if self.dimension is not None:
            plan = self.plan()
            facts.update(dimension=self.dimension, padded_dimension=plan.padded_dimension,
                         granularity=plan.gamma, local_noise_std=plan.sigma,
                         inflated_clip_norm=plan.inflated_norm)
        return facts

    def _participation(self) -> Participation:
        return mechanism.participation_of(self)

    def _largest_cohort(self) -> int:
        participation = self._participation()
        poisson = participation.sampling == "poisson"
        return participation.population_size if poisson else participation.cohort_size

    # The aggregator --------------------------------------------------------------------
    def initialize(self) -> AggregatorState:
        return {"seed": self.seed, "round": 0}

    def signs(self, state: AggregatorState, padded_dimension: int) -> np.ndarray:
        """The round's random signs of the Hadamard rotation, shared by every client."""
        rng = np.random.default_rng([state["seed"], state["round"], _ROTATION])
        return rng.choice([-1.0, 1.0], size=padded_dimension)

    def client_integers(self, state: AggregatorState, value: ClientValue, position: int,
                        plan: Optional[Plan] = None,
                        signs: Optional[np.ndarray] = None) -> tuple[np.ndarray, bool, int]:
        """What participant ``position`` reduces modulo 2**bits (its rounded value plus its
        noise, int64), whether it was clipped, and its rounding redraws."""
        plan = self.plan() if plan is None else plan
        signs = self.signs(state, plan.padded_dimension) if signs is None else signs
        clipped, was_clipped = clip(value, self.clip_norm)
        scaled = rotate(flatten(clipped), signs) / plan.gamma
        seed, round_num = state["seed"], state["round"]
        rounding_rng = np.random.default_rng([seed, round_num, _ROUNDING, position])
        rounded, retries = dgauss.conditional_round(scaled, plan.inflated_norm / plan.gamma,
                                                    rounding_rng)
        noise_rng = np.random.default_rng([seed, round_num, _NOISE, position])
        return rounded + dgauss.sample(plan.sigma, rounded.size, noise_rng), was_clipped, retries

    def next(self, state: AggregatorState, client_values: Sequence[ClientValue],
             update_weights: np.ndarray, *, client_ids: ClientIds = None) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        dimension = sum(np.size(a) for a in client_values[0])
        if dimension != self.dimension:
            raise AggregatorConfigError(
                f"DistributedDP: dimension={self.dimension!r}, but client values have "
                f"{dimension} coordinates; set dimension={dimension}")
        values, _ = participating(client_values, weights)
        plan, cohort = self.plan(), self._participation().expected_cohort_size
        signs = self.signs(state, plan.padded_dimension)
        encoded = [self.client_integers(state, v, i, plan, signs) for i, v in enumerate(values)]
        modulus, seed, round_num = 2**self.bits, state["seed"], state["round"]
        if len(values) >= self.min_survivors:
            inputs = [ints.view(np.uint64) & np.uint64(modulus - 1) for ints, _, _ in encoded]
            outcome = secure_sum(inputs, modulus_bits=self.bits, threshold=self.min_survivors,
                                 dropout=self.dropout, seed=seed, round_num=round_num)
            total, survivors, measured = outcome.total, outcome.survivors, outcome.measurements
        else:  # fewer participants than the threshold: the protocol cannot succeed
            total, survivors = None, []
            input_bytes = math.ceil(plan.padded_dimension * self.bits / 8)
            measured = protocol_measurements(len(values), self.min_survivors, [], input_bytes)
        measurements = {
            **measured,
            "dp/clip_norm": self.clip_norm,
            "dp/num_clipped": float(sum(clipped for _, clipped, _ in encoded)),
            "dp/num_clients": float(len(values)),
            "dp/noise_std": plan.gamma * plan.sigma * math.sqrt(len(survivors)) / cohort,
            "dp/epsilon": self.epsilon(round_num + 1),
            "dp/delta": self.target_delta,
            "ddp/bits_per_coordinate": float(self.bits),
            "ddp/bits_per_client": float(self.bits * plan.padded_dimension),
            "ddp/granularity": plan.gamma,
            "ddp/local_noise_std": plan.sigma,
            "ddp/inflated_clip_norm": plan.inflated_norm,
            "ddp/rounding_retries": float(sum(retries for _, _, retries in encoded)),
            "ddp/modular_overflows": 0.0,
        }
        new_state = {"seed": seed, "round": round_num + 1}
        if total is None:
            return AggregationOutput(zeros_like(client_values[0]), new_state, measurements)
        half = modulus // 2
        true_sum = sum(encoded[i][0] for i in survivors)  # what the modulus must hold
        wrapped = (true_sum < -half) | (true_sum >= half)
        measurements["ddp/modular_overflows"] = float(np.sum(wrapped))
        centred = total.astype(np.int64)
        centred[centred >= half] -= modulus
        mean = unrotate(centred * plan.gamma, signs, dimension) / cohort
        return AggregationOutput(unflatten(mean, client_values[0]), new_state, measurements)
