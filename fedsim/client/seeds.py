"""Randomness per client and round: one seed from (run seed, round, client id), and the RNG states it gives.

Layers that draw random numbers (Keras's Dropout, GaussianNoise, random
augmentation) keep their generator's state in a variable. Reset from one
value for every client, every client in every round would draw the same
masks; carried over, the masks would depend on which clients trained before
on the same executor. Instead every client starts its generators from states
derived from ``client_seed(run seed, round, client id)`` alone: masks differ
between clients and rounds, a rerun (or a resumed run, or another executor)
reproduces them, and retrying a client draws the same masks again.

This module is the one place these seeds are derived (the shuffled client
datasets of ``fedsim.experiment`` use ``client_seed`` too).
"""
from __future__ import annotations

import hashlib
import numbers
from typing import Any, Optional, Sequence

import numpy as np

# Keras casts a generator state to int32 by ``floormod(state, int32.max - 1)``;
# states below this bound reach the kernels unchanged, on every backend.
_STATE_BOUND = 2**31 - 2


def _client_key(client_id: Any) -> int:
    """A stable 64-bit key of a client id (ints and their NumPy kin alike; strings by their text)."""
    if isinstance(client_id, numbers.Integral) and not isinstance(client_id, bool):
        text = f"int:{int(client_id)}"
    else:
        text = f"str:{client_id}"
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def client_seed(run_seed: int, round_num: int, client_id: Any) -> int:
    """The seed of ``client_id`` in round ``round_num`` of a run seeded ``run_seed``: an int in [0, 2**63)."""
    words = np.random.SeedSequence([int(run_seed), int(round_num), _client_key(client_id)]).generate_state(
        2, np.uint32
    )
    return (int(words[0]) << 31) ^ int(words[1])


def rng_state_variables(model: Any) -> list:
    """The variables holding ``model``'s random-generator states (part of its local variables).

    A model declares them with a ``rng_state_variables`` property (the Keras
    wrapper lists its layers' seed-generator states); a model without one
    draws no random numbers the client work can seed.
    """
    return list(getattr(model, "rng_state_variables", ()))


def rng_states(seed: Optional[int], variables: Sequence[Any], initial: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The values each RNG state variable starts a client from.

    With a seed: integers in ``[0, 2**31 - 2)`` drawn from it, in each
    variable's shape and dtype (distinct per variable, so two Dropout layers
    draw independent masks). Without one (a client trained outside a round):
    the ``initial`` values.
    """
    if seed is None or not variables:
        return [np.array(value) for value in initial]
    sizes = [int(np.prod(v.shape)) for v in variables]
    words = np.random.SeedSequence(int(seed)).generate_state(max(sum(sizes), 1), np.uint64) % _STATE_BOUND
    states, start = [], 0
    for variable, size in zip(variables, sizes):
        dtype = np.dtype(getattr(variable.dtype, "as_numpy_dtype", variable.dtype))  # tf.DType or a name
        states.append(words[start:start + size].reshape(tuple(variable.shape)).astype(dtype))
        start += size
    return states
