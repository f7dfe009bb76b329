"""Secure aggregation by pairwise masking, simulated.

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS 2017.

Each participating client clips its value to ``clip_norm``, maps every
coordinate from ``[-clip_norm, clip_norm]`` to an integer level in
``[0, 2**quantization_bits - 1]`` (unbiased stochastic rounding) and adds, for
every other participant ``j``, the mask ``+m_ij`` (if it comes first) or
``-m_ij`` modulo ``2**modulus_bits``. ``m_ij`` is drawn from a generator seeded
per pair, standing in for the key agreement of the protocol. The server sees
only masked vectors; in the sum of all of them the masks cancel.

Clients may drop out after the masks are agreed (``dropout_fraction``, chosen
at random each round). The server then reconstructs the dropped clients' pair
masks (in the protocol: from secret shares held by the survivors) and
subtracts them, so the result is exactly the modular sum of the survivors'
integer levels. The protocol's self-masks, which guard against a client
declared dropped whose input arrives late, do not change the sum and are not
simulated. The sum is then dequantized and divided by the number of
survivors: every surviving client counts once.
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
from fedsim.aggregators.validation import AggregatorConfigError, in_interval, int_at_least, positive
from fedsim.aggregators.vectors import flatten, participating, unflatten, zeros_like

# Stream tags keep the three uses of randomness in a round independent.
_DROPOUT, _ROUNDING, _MASK = 0, 1, 2


def choose_dropouts(seed: int, round_num: int, num_clients: int, fraction: float) -> list[int]:
    """The participants (by position) that drop out after mask agreement."""
    rng = np.random.default_rng([seed, round_num, _DROPOUT])
    num_dropped = math.floor(fraction * num_clients)
    return sorted(rng.choice(num_clients, num_dropped, replace=False).tolist())


def encode(vector: np.ndarray, clip_norm: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Integer levels in ``[0, 2**bits - 1]`` for a vector inside ``[-clip_norm, clip_norm]``."""
    scaled = (vector + clip_norm) / (2 * clip_norm) * (2**bits - 1)
    return np.clip(stochastic_round(scaled, rng), 0, 2**bits - 1).astype(np.uint64)


def decode_sum(level_sum: np.ndarray, num_clients: int, clip_norm: float, bits: int) -> np.ndarray:
    """The sum of the real vectors whose ``num_clients`` level vectors sum to ``level_sum``."""
    return level_sum.astype(np.float64) * (2 * clip_norm / (2**bits - 1)) - num_clients * clip_norm


def pair_mask(
    seed: int, round_num: int, i: int, j: int, size: int, modulus_bits: int
) -> np.ndarray:
    """The mask shared by participants ``i < j``, uniform modulo ``2**modulus_bits``."""
    rng = np.random.default_rng([seed, round_num, _MASK, i, j])
    return rng.integers(0, 2**modulus_bits, size=size, dtype=np.uint64)


def mask_inputs(
    encoded: list[np.ndarray], seed: int, round_num: int, modulus_bits: int
) -> list[np.ndarray]:
    """Each participant's masked input: levels ``+ m_ij`` for ``j > i``, ``- m_ji`` for
    ``j < i``. uint64 arithmetic wraps modulo 2**64, a multiple of the modulus."""
    masked = [levels.copy() for levels in encoded]
    for i in range(len(encoded)):
        for j in range(i + 1, len(encoded)):
            mask = pair_mask(seed, round_num, i, j, encoded[i].size, modulus_bits)
            masked[i] += mask
            masked[j] -= mask
    modulus_mask = np.uint64(2**modulus_bits - 1)
    return [m & modulus_mask for m in masked]


def unmask_sum(
    masked: dict[int, np.ndarray],
    dropped: Sequence[int],
    seed: int,
    round_num: int,
    modulus_bits: int,
) -> np.ndarray:
    """Server side: sums the survivors' masked inputs (``masked`` maps participant
    index to input) and removes the masks they share with dropped participants."""
    total = np.zeros_like(next(iter(masked.values())))
    for vector in masked.values():
        total += vector
    for d in dropped:
        for i in masked:
            mask = pair_mask(seed, round_num, min(i, d), max(i, d), total.size, modulus_bits)
            # Survivor i added +mask if it came first in the pair, else -mask.
            total = total - mask if i < d else total + mask
    return total & np.uint64(2**modulus_bits - 1)


@attrs.frozen
class SecureAggregation:
    """Mean of clipped, quantized client values computed through masked sums."""

    clip_norm: float = attrs.field(validator=positive)
    quantization_bits: int = attrs.field(default=16, validator=int_at_least(1))
    modulus_bits: int = attrs.field(default=32, validator=int_at_least(2))
    dropout_fraction: float = attrs.field(default=0.0, validator=in_interval(0.0, 1.0))
    seed: int = attrs.field(default=0, validator=int_at_least(0))

    def __attrs_post_init__(self) -> None:
        if not self.quantization_bits < self.modulus_bits <= 64:
            raise AggregatorConfigError(
                f"quantization_bits={self.quantization_bits} must be < modulus_bits="
                f"{self.modulus_bits} <= 64; the sum of levels needs headroom in the modulus"
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
        values, _ = participating(client_values, weights)
        seed, round_num = state["seed"], state["round"]
        dropped = choose_dropouts(seed, round_num, len(values), self.dropout_fraction)
        survivors = [i for i in range(len(values)) if i not in dropped]
        self._check_headroom(len(survivors))
        clipped = [clip(value, self.clip_norm) for value in values]
        rounding_rng = np.random.default_rng([seed, round_num, _ROUNDING])
        encoded = [
            encode(flatten(value), self.clip_norm, self.quantization_bits, rounding_rng)
            for value, _ in clipped
        ]
        masked = mask_inputs(encoded, seed, round_num, self.modulus_bits)
        measurements = {
            "secagg/num_survivors": float(len(survivors)),
            "secagg/num_dropped": float(len(dropped)),
            "secagg/aborted": float(len(survivors) < 2),
            "secagg/bits_per_client": (
                float(self.modulus_bits * encoded[0].size) if encoded else 0.0
            ),
            "secagg/float32_bits_per_client": float(32 * sum(np.size(a) for a in client_values[0])),
            "secagg/clip_norm": self.clip_norm,
            "secagg/num_clipped": float(sum(was_clipped for _, was_clipped in clipped)),
        }
        new_state = {"seed": seed, "round": round_num + 1}
        if len(survivors) < 2:
            # The protocol aborts below its threshold: one survivor's "sum" is its input.
            return AggregationOutput(zeros_like(client_values[0]), new_state, measurements)
        level_sum = unmask_sum(
            {i: masked[i] for i in survivors}, dropped, seed, round_num, self.modulus_bits
        )
        total = decode_sum(level_sum, len(survivors), self.clip_norm, self.quantization_bits)
        return AggregationOutput(
            unflatten(total / len(survivors), client_values[0]), new_state, measurements
        )

    def _check_headroom(self, num_survivors: int) -> None:
        """The sum of levels must stay below the modulus, or it wraps around."""
        if num_survivors * (2**self.quantization_bits - 1) >= 2**self.modulus_bits:
            raise AggregationError(
                f"{num_survivors} clients x (2**{self.quantization_bits} - 1) levels overflow "
                f"modulus 2**{self.modulus_bits}; raise modulus_bits or lower quantization_bits"
            )
