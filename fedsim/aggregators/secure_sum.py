"""The secure-sum protocol of Bonawitz et al., simulated phase by phase.

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS 2017: the practical protocol (honest-but-curious version) and its
communication analysis.

The server runs the paper's rounds; ``U1 ⊇ U2 ⊇ U3 ⊇ U5`` are the clients
that complete each one (a client that drops in a phase sends nothing in it):

- ``advertise_keys`` (U1): each client sends two public keys.
- ``share_keys`` (U2): each client draws its self-mask seed ``b_u`` and sends,
  encrypted for every other member of U1, t-out-of-|U1| Shamir shares of
  ``b_u`` and of its key-agreement secret key ``s_u^SK``.
- ``masked_input`` (U3): each client sends ``y_u = x_u + PRG(b_u) + sum over
  v in U2 of ±PRG(s_uv)`` modulo ``R = 2**modulus_bits`` (``+`` if ``u < v``).
- ``unmasking`` (U5): each client sends its shares of ``s_v^SK`` for v in
  U2 \\ U3 (dropped after sharing) and of ``b_v`` for v in U3.

The server aborts when fewer than ``t`` clients answer in any phase; else it
rebuilds from shares the self-masks of U3 and the pair masks between U3 and
U2 \\ U3, and ``sum(y_u) - masks = sum of x_u over U3 (mod R)``. A client that
drops during unmasking has sent ``y_u``: it stays in the sum.

Computed: every mask is a real PRG output (NumPy PCG64) uniform modulo R, and
both the clients' masked inputs and the server's unmasking are computed in
full, so the total is exact and a masked input reveals nothing of its input.
Simulated: key agreement (``s_uv`` is the seed ``[seed, round, tag, u, v]``
instead of ECDH of ``s_u^SK`` with ``s_v^PK``; ``b_u`` is ``[seed, round, tag, u]``).
Shamir sharing is counted, not computed: the server rebuilds a secret exactly
when at least ``t`` clients sent shares, which is when t-out-of-n Shamir
reconstruction succeeds, by regenerating the mask from its seed. Encryption,
signatures and the active-adversary consistency check are not simulated and
their bytes are not counted; nor are client ids or message headers.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import attrs
import numpy as np

from fedsim.aggregators.base import AggregationError
from fedsim.aggregators.validation import in_interval

PHASES = ("advertise_keys", "share_keys", "masked_input", "unmasking")

# Message sizes for the primitives the paper's implementation uses (ECDH on a
# 256-bit curve, Shamir shares of 256-bit secrets, AES-GCM); assumptions, not
# measured, and named so a cost study can change them in one place.
PUBLIC_KEY_BYTES = 32  # one key-agreement public key
SHARE_BYTES = 32  # one Shamir share of a 256-bit secret: one field element
AEAD_OVERHEAD_BYTES = 28  # AES-GCM nonce (12) and tag (16) per ciphertext

# Stream tags of the protocol's randomness under [seed, round, tag, ...]. Callers
# drawing from the same (seed, round) use other tags (SecureAggregation uses 1).
_DROPOUT, _PAIR_MASK, _SELF_MASK = 0, 2, 3


@attrs.frozen
class PhaseDropout:
    """Fraction of the clients entering each phase that drop out in it."""

    advertise_keys: float = attrs.field(default=0.0, validator=in_interval(0.0, 1.0))
    share_keys: float = attrs.field(default=0.0, validator=in_interval(0.0, 1.0))
    masked_input: float = attrs.field(default=0.0, validator=in_interval(0.0, 1.0))
    unmasking: float = attrs.field(default=0.0, validator=in_interval(0.0, 1.0))


@attrs.frozen
class SecureSumOutcome:
    """One run of the protocol: the unmasked sum, whose inputs it holds, and costs."""

    total: np.ndarray | None  # sum mod 2**modulus_bits over survivors; None if aborted
    survivors: list[int]  # positions (into the inputs) whose inputs are in total
    measurements: dict[str, float]


def phase_sets(
    num_clients: int, dropout: PhaseDropout, seed: int, round_num: int
) -> list[list[int]]:
    """The clients completing each phase: ``[U1, U2, U3, U5]``. Each phase drops
    ``floor(fraction * entering)`` of the clients entering it, at random from
    ``(seed, round_num, phase)``."""
    sets, entering = [], list(range(num_clients))
    for index, phase in enumerate(PHASES):
        rng = np.random.default_rng([seed, round_num, _DROPOUT, index])
        # The epsilon keeps e.g. 0.29 * 100 = 28.999... from dropping 28, not 29.
        num_dropped = math.floor(getattr(dropout, phase) * len(entering) + 1e-9)
        gone = set(rng.choice(entering, num_dropped, replace=False).tolist()) if num_dropped else ()
        entering = [u for u in entering if u not in gone]
        sets.append(entering)
    return sets


def prg(tag: Sequence[int], size: int, modulus_bits: int) -> np.ndarray:
    """PRG output expanded from seed ``tag``: uniform uint64 modulo ``2**modulus_bits``."""
    return np.random.default_rng(list(tag)).integers(0, 2**modulus_bits, size, dtype=np.uint64)


def masked_inputs(
    inputs: Mapping[int, np.ndarray],
    key_sharers: Sequence[int],
    *,
    modulus_bits: int,
    seed: int,
    round_num: int,
) -> dict[int, np.ndarray]:
    """Clients' side: ``y_u`` for each client ``u`` in ``inputs`` (U3), masked with
    its self-mask and its pair masks with every other client in ``key_sharers`` (U2).
    uint64 arithmetic wraps modulo 2**64, a multiple of the modulus."""
    size = next(iter(inputs.values())).size
    masked = {
        u: x + prg([seed, round_num, _SELF_MASK, u], size, modulus_bits) for u, x in inputs.items()
    }
    for a, u in enumerate(key_sharers):
        for v in key_sharers[a + 1 :]:
            if u not in masked and v not in masked:
                continue
            low, high = min(u, v), max(u, v)
            mask = prg([seed, round_num, _PAIR_MASK, low, high], size, modulus_bits)
            # Both clients derive the same s_uv; the lower one adds, the higher subtracts.
            if low in masked:
                masked[low] += mask
            if high in masked:
                masked[high] -= mask
    modulus_mask = np.uint64(2**modulus_bits - 1)
    return {u: y & modulus_mask for u, y in masked.items()}


def unmask(
    masked: Mapping[int, np.ndarray],
    key_sharers: Sequence[int],
    *,
    modulus_bits: int,
    seed: int,
    round_num: int,
) -> np.ndarray:
    """Server side: sums the masked inputs of U3, removes their self-masks (``b_u``
    rebuilt from shares) and their pair masks with the clients of ``key_sharers``
    (U2) that sent no masked input (``s_d^SK`` rebuilt from shares)."""
    size = next(iter(masked.values())).size
    total = np.zeros(size, dtype=np.uint64)
    for u, y in masked.items():
        total += y - prg([seed, round_num, _SELF_MASK, u], size, modulus_bits)
    for d in key_sharers:
        if d in masked:
            continue
        for u in masked:
            mask = prg([seed, round_num, _PAIR_MASK, min(u, d), max(u, d)], size, modulus_bits)
            # Survivor u added the mask if it came first in the pair, else subtracted it.
            total = total - mask if u < d else total + mask
    return total & np.uint64(2**modulus_bits - 1)


def phase_bytes(completed: Sequence[int], input_bytes: int) -> list[int]:
    """Bytes one client sends in each phase that ran, given ``completed`` (|U1|, |U2|,
    ...): two public keys; one ciphertext of two shares for each other member of
    U1; the masked input; one share for each member of U2 (its own included)."""
    per_phase = [2 * PUBLIC_KEY_BYTES]
    if len(completed) > 1:
        per_phase.append((completed[0] - 1) * (2 * SHARE_BYTES + AEAD_OVERHEAD_BYTES))
    if len(completed) > 2:
        per_phase.append(input_bytes)
    if len(completed) > 3:
        per_phase.append(completed[1] * SHARE_BYTES)
    return per_phase[: len(completed)]


def protocol_measurements(
    num_clients: int, threshold: int, completed: Sequence[int], input_bytes: int
) -> dict[str, float]:
    """The ``secagg/...`` figures of a run in which ``completed[i]`` clients completed
    phase ``i`` of the phases that ran (the last one below ``threshold`` if it aborted).

    ``abort_phase`` is 1 to 4 (0: no abort); ``bytes_per_client`` is what a client
    that stays to the end sends, ``bytes_total`` what all clients sent."""
    aborted = len(completed) < len(PHASES) or min(completed) < threshold
    entering = [num_clients, *completed[:-1]]
    dropped = [e - c for e, c in zip(entering, completed)]
    dropped += [0] * (len(PHASES) - len(dropped))
    per_phase = phase_bytes(completed, input_bytes)
    return {
        "secagg/num_clients": float(num_clients),
        "secagg/threshold": float(threshold),
        "secagg/num_survivors": 0.0 if aborted else float(completed[2]),
        "secagg/num_dropped": float(sum(dropped)),
        **{f"secagg/dropped_at_{p}": float(d) for p, d in zip(PHASES, dropped)},
        "secagg/aborted": float(aborted),
        "secagg/abort_phase": float(max(len(completed), 1) if aborted else 0),
        "secagg/input_bytes_per_client": float(input_bytes),
        "secagg/bytes_per_client": float(sum(per_phase)),
        "secagg/bytes_total": float(sum(b * c for b, c in zip(per_phase, completed))),
    }


def secure_sum(
    vectors: Sequence[np.ndarray],
    *,
    modulus_bits: int,
    threshold: int,
    dropout: PhaseDropout,
    seed: int,
    round_num: int,
) -> SecureSumOutcome:
    """Runs the protocol on uint64 ``vectors`` (entries < 2**modulus_bits): the sum
    modulo ``2**modulus_bits`` of the inputs of the clients that sent a masked
    input, or an abort when fewer than ``threshold`` clients complete any phase."""
    size = _check_inputs(vectors, modulus_bits, threshold)
    sets = phase_sets(len(vectors), dropout, seed, round_num)
    # The server stops after the first phase with fewer than t answers.
    ran = next((i + 1 for i, s in enumerate(sets) if len(s) < threshold), len(PHASES))
    completed = [len(s) for s in sets[:ran]]
    input_bytes = math.ceil(size * modulus_bits / 8)
    measurements = protocol_measurements(len(vectors), threshold, completed, input_bytes)
    if measurements["secagg/aborted"]:
        return SecureSumOutcome(None, [], measurements)
    key_sharers, senders = sets[1], sets[2]
    common = {"modulus_bits": modulus_bits, "seed": seed, "round_num": round_num}
    masked = masked_inputs({u: vectors[u] for u in senders}, key_sharers, **common)
    return SecureSumOutcome(unmask(masked, key_sharers, **common), senders, measurements)


def _check_inputs(vectors: Sequence[np.ndarray], modulus_bits: int, threshold: int) -> int:
    """Validates the arguments of ``secure_sum``; returns the vector length."""
    if not (isinstance(modulus_bits, int) and 1 <= modulus_bits <= 64):
        raise AggregationError(f"modulus_bits={modulus_bits!r} must be an integer in [1, 64]")
    if not (isinstance(threshold, int) and 2 <= threshold <= len(vectors)):
        raise AggregationError(
            f"threshold={threshold!r} must be an integer in [2, {len(vectors)}] (the cohort "
            "size): below 2 the 'sum' is one client's input; above the cohort it never succeeds"
        )
    size = np.shape(vectors[0])
    for position, vector in enumerate(vectors):
        vector = np.asarray(vector)
        if vector.dtype != np.uint64 or vector.ndim != 1 or vector.shape != size:
            raise AggregationError(
                f"input {position} has dtype {vector.dtype} and shape {vector.shape}; every "
                f"input must be a uint64 vector of shape {size}, like input 0"
            )
        if vector.size and int(vector.max()) >= 2**modulus_bits:
            raise AggregationError(
                f"input {position} has entry {int(vector.max())} >= 2**{modulus_bits}; "
                "encode inputs modulo the modulus or raise modulus_bits"
            )
    return size[0]
