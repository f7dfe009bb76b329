"""State of wrappers whose randomness is seeded per round (attacks, quantization, rotation).

The state holds the seed and a round counter, never a generator object, so it
checkpoints as plain numbers and a resumed run draws exactly what the
uninterrupted run drew: ``np.random.default_rng([seed, round, ...])``.
"""

from __future__ import annotations

from typing import Any

from fedsim.aggregators.base import Aggregator, AggregatorState


def initial_state(seed: int, inner: Aggregator) -> AggregatorState:
    """Round 0 of a seeded wrapper around ``inner``."""
    return {"seed": seed, "round": 0, "inner": inner.initialize()}


def next_state(state: AggregatorState, inner_state: Any) -> AggregatorState:
    """The state for the next round: same seed, round + 1, the inner aggregator's new state."""
    return {"seed": state["seed"], "round": state["round"] + 1, "inner": inner_state}
