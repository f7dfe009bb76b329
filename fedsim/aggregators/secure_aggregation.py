"""Secure aggregation of clipped, quantized client values (Bonawitz et al. 2017).

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS 2017. The protocol itself (masks, dropouts per phase, threshold, bytes)
is ``secure_sum``; this module is the aggregation rule on top of it.

Each participating client clips its value to ``clip_norm`` and maps every
coordinate to an integer level in ``[0, 2**quantization_bits - 1]`` by
unbiased stochastic rounding. The server learns only the modular sum of the
levels of the clients whose masked input arrived, decodes it and divides:

- ``weighted=False``: by the number of those clients (each counts once);
- ``weighted=True``: the weight travels masked with the update. A client
  sends ``w * clip(x)``, encoded on ``[-W * clip_norm, W * clip_norm]`` with
  ``W = max_update_weight``, and ``w`` encoded on ``[0, W]`` as one extra
  coordinate; the server divides the summed weighted values by the summed
  weights. A weight above ``W`` is capped to ``W`` and counted
  (``secagg/num_weights_capped``), as a norm above ``clip_norm`` is clipped.

Error of the weighted mean per coordinate, with ``L = 2**quantization_bits - 1``,
``k`` survivors and summed weight ``D``: each weighted value is off by less
than ``q = 2 W clip_norm / L`` and each weight by less than ``r = W / L``, so
``|result - exact| < k (q + clip_norm r) / (D - k r)``: about
``3 clip_norm / L`` when every weight is ``W``, more when weights are small
against ``W``, so keep ``W`` tight. Unweighted, the bound is ``2 clip_norm / L``.

The threshold is a fraction of the cohort: ``t = max(2, ceil(threshold * n))``
for ``n`` participating clients. The default 2/3 is above one half, so no two
disjoint groups of ``t`` clients exist and a server that lies about who
dropped cannot collect both the ``b_u`` and the ``s_u^SK`` shares of one
client; it tolerates a third of the cohort dropping. An aborted round (fewer
than ``t`` clients in some phase, or fewer than 2 participants) returns zeros
with ``secagg/aborted = 1``.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators.base import (
    AggregationError,
    AggregationOutput,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.clipping import clip
from fedsim.aggregators.quantization import stochastic_round
from fedsim.aggregators.secure_sum import (
    PhaseDropout,
    SecureSumOutcome,
    protocol_measurements,
    secure_sum,
)
from fedsim.aggregators.validation import AggregatorConfigError, boolean, in_interval, int_at_least, positive
from fedsim.aggregators.vectors import flatten, participating, unflatten, zeros_like

# The protocol core is re-exported: rules built on it import it from here or secure_sum.
__all__ = [
    "ModulusOverflowError",
    "PhaseDropout",
    "SecureAggregation",
    "SecureSumOutcome",
    "decode_sum",
    "encode",
    "secure_sum",
]

_ROUNDING = 1  # stream tag for stochastic rounding; secure_sum uses 0, 2 and 3


class ModulusOverflowError(AggregationError):
    """The sum of the clients' levels could reach the modulus and wrap around."""


def encode(vector: np.ndarray, bound: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Integer levels in ``[0, 2**bits - 1]`` for a vector inside ``[-bound, bound]``."""
    scaled = (vector + bound) / (2 * bound) * (2**bits - 1)
    return np.clip(stochastic_round(scaled, rng), 0, 2**bits - 1).astype(np.uint64)


def decode_sum(level_sum: np.ndarray, num_clients: int, bound: float, bits: int) -> np.ndarray:
    """The sum of the real vectors whose ``num_clients`` level vectors sum to ``level_sum``."""
    return level_sum.astype(np.float64) * (2 * bound / (2**bits - 1)) - num_clients * bound


def _optional_positive(instance, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None:
        positive(instance, attribute, value)



_fraction = in_interval(0.0, 1.0)


@attrs.frozen
class SecureAggregation:
    """Mean of clipped, quantized client values computed by secure aggregation.

    ``dropout_fraction`` is the dropout at masked-input collection (as before
    the other phases existed); ``*_dropout`` are the other phases' fractions.
    """

    clip_norm: float = attrs.field(validator=positive)
    quantization_bits: int = attrs.field(default=16, validator=int_at_least(1))
    modulus_bits: int = attrs.field(default=32, validator=int_at_least(2))
    dropout_fraction: float = attrs.field(default=0.0, validator=_fraction)
    seed: int = attrs.field(default=0, validator=int_at_least(0))
    threshold: float = attrs.field(
        default=2 / 3, validator=in_interval(0.0, 1.0, closed_low=False, closed_high=True)
    )
    advertise_keys_dropout: float = attrs.field(default=0.0, validator=_fraction)
    share_keys_dropout: float = attrs.field(default=0.0, validator=_fraction)
    unmasking_dropout: float = attrs.field(default=0.0, validator=_fraction)
    weighted: bool = attrs.field(default=False, validator=boolean)
    max_update_weight: float | None = attrs.field(default=None, validator=_optional_positive)

    def __attrs_post_init__(self) -> None:
        if not self.quantization_bits < self.modulus_bits <= 64:
            raise AggregatorConfigError(
                f"quantization_bits={self.quantization_bits} must be < modulus_bits="
                f"{self.modulus_bits} <= 64; the sum of levels needs headroom in the modulus"
            )
        if self.weighted and self.max_update_weight is None:
            raise AggregatorConfigError(
                "weighted=True needs max_update_weight, the largest update weight the "
                "encoding covers; set it to the largest weight a client can have"
            )
        if not self.weighted and self.max_update_weight is not None:
            raise AggregatorConfigError(
                f"max_update_weight={self.max_update_weight!r} only applies with "
                "weighted=True; set weighted=True or drop max_update_weight"
            )

    @property
    def dropout(self) -> PhaseDropout:
        return PhaseDropout(
            advertise_keys=self.advertise_keys_dropout,
            share_keys=self.share_keys_dropout,
            masked_input=self.dropout_fraction,
            unmasking=self.unmasking_dropout,
        )

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
        values, weights = participating(client_values, weights)
        seed, round_num = state["seed"], state["round"]
        self._check_headroom(len(values))
        max_weight = self.max_update_weight if self.weighted else 1.0
        bound = self.clip_norm * max_weight  # every coordinate a client encodes is within it
        clipped = [clip(value, self.clip_norm) for value in values]
        levels = [
            self._encode(
                flatten(value),
                min(weight, max_weight) if self.weighted else None,
                np.random.default_rng([seed, round_num, _ROUNDING, position]),
            )
            for position, ((value, _), weight) in enumerate(zip(clipped, weights))
        ]
        dimension = sum(np.size(a) for a in client_values[0])
        outcome = self._secure_sum(levels, dimension + self.weighted, seed, round_num)
        measurements = {
            **outcome.measurements,
            "secagg/float32_bytes_per_client": float(4 * dimension),
            "secagg/clip_norm": self.clip_norm,
            "secagg/num_clipped": float(sum(was_clipped for _, was_clipped in clipped)),
            "secagg/num_weights_capped": float(np.sum(weights > max_weight) * self.weighted),
            "secagg/total_weight": 0.0,
        }
        new_state = {"seed": seed, "round": round_num + 1}
        if outcome.total is None:
            return AggregationOutput(zeros_like(client_values[0]), new_state, measurements)
        num_survivors, unit = len(outcome.survivors), max_weight / (2**self.quantization_bits - 1)
        total = decode_sum(outcome.total[:dimension], num_survivors, bound, self.quantization_bits)
        # Weighted: the last coordinate is the weights' levels, on [0, max_weight].
        total_weight = float(outcome.total[dimension]) * unit if self.weighted else num_survivors
        measurements["secagg/total_weight"] = float(total_weight)
        # Every weight can round down to level 0; then no mean is defined.
        mean = total / total_weight if total_weight > 0 else np.zeros(dimension)
        return AggregationOutput(unflatten(mean, client_values[0]), new_state, measurements)

    def _encode(
        self, vector: np.ndarray, weight: float | None, rng: np.random.Generator
    ) -> np.ndarray:
        """One client's levels: its clipped value, or, weighted, ``weight * value``
        on ``[-W clip_norm, W clip_norm]`` and then ``weight`` on ``[0, W]``."""
        bits = self.quantization_bits
        if weight is None:
            return encode(vector, self.clip_norm, bits, rng)
        max_weight = self.max_update_weight
        levels = encode(weight * vector, self.clip_norm * max_weight, bits, rng)
        weight_level = stochastic_round(np.array([weight / max_weight * (2**bits - 1)]), rng)
        weight_level = np.clip(weight_level, 0, 2**bits - 1).astype(np.uint64)
        return np.concatenate([levels, weight_level])

    def _secure_sum(
        self, levels: list[np.ndarray], coordinates: int, seed: int, round_num: int
    ) -> SecureSumOutcome:
        """Runs the protocol with ``t = max(2, ceil(threshold * n))``; with fewer than
        2 participants it cannot start (a lone input has nothing to hide in)."""
        threshold = max(2, math.ceil(self.threshold * len(levels) - 1e-9))
        if threshold > len(levels):
            input_bytes = math.ceil(coordinates * self.modulus_bits / 8)
            measured = protocol_measurements(len(levels), threshold, [], input_bytes)
            return SecureSumOutcome(None, [], measured)
        return secure_sum(
            levels,
            modulus_bits=self.modulus_bits,
            threshold=threshold,
            dropout=self.dropout,
            seed=seed,
            round_num=round_num,
        )

    def _check_headroom(self, num_clients: int) -> None:
        """The sum of levels must stay below the modulus, or it wraps around."""
        if num_clients * (2**self.quantization_bits - 1) >= 2**self.modulus_bits:
            raise ModulusOverflowError(
                f"{num_clients} clients x (2**{self.quantization_bits} - 1) levels overflow "
                f"modulus 2**{self.modulus_bits}; raise modulus_bits or lower quantization_bits"
            )
