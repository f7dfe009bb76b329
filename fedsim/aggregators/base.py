"""The aggregator protocol: how client deltas become one server delta.

A *client value* is a list of NumPy arrays, one per trainable variable of the
model, in the model's variable order. An aggregator is a pair of pure
functions with explicit state, so rounds are reproducible and checkpointable:

    state = aggregator.initialize()
    output = aggregator.next(state, client_values, update_weights, client_ids=ids)
    output.result        # list of arrays, same structure as one client value
    output.state         # the state for the next round
    output.measurements  # flat dict of floats, reported in the round's metrics

State is a nest (dicts, lists, tuples) of NumPy arrays and Python scalars,
never arbitrary objects, so checkpoints can store it without pickle. Wrappers
(clipping, zeroing, noise, compression) hold an ``inner`` aggregator and keep
its state under the ``"inner"`` key of their own, and pass ``client_ids``
through to it.

``client_ids`` is an optional keyword: one stable identifier (str or int) per
client value, the same for a client in every round it is sampled. Only rules
that keep per-client state across rounds need it (top-k sparsification with
error feedback keys each client's residual by id); every other rule accepts
and ignores it, so the engine can always pass it.

Randomness (noise, stochastic rounding, masks, attacks) is derived from a seed
and a round counter kept in the state, so a run is deterministic given its
seed and resumes exactly from a checkpoint.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import attrs
import numpy as np

ClientValue = list[np.ndarray]
AggregatorState = Any
ClientIds = Sequence[str | int] | None


class AggregationError(ValueError):
    """Raised when client values cannot be aggregated (bad shapes, weights, ...)."""


@attrs.frozen
class AggregationOutput:
    """What one call of ``Aggregator.next`` returns."""

    result: list[np.ndarray]
    state: AggregatorState
    measurements: dict[str, float] = attrs.field(factory=dict)


@runtime_checkable
class Aggregator(Protocol):
    """Combines client values into one value; state goes in and comes out."""

    def initialize(self) -> AggregatorState:
        """Returns the state for the first round."""

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        """Aggregates one round's client values given each client's update weight."""


def check_client_values(
    client_values: Sequence[ClientValue], update_weights: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Validates one round's inputs and returns the update weights as float64.

    Every client value must have the same number of arrays with the same
    shapes; there must be one finite, non-negative update weight per client.
    """
    weights = np.asarray(update_weights, dtype=np.float64)
    if len(client_values) == 0:
        raise AggregationError("no client values to aggregate: the cohort reported nothing")
    if weights.shape != (len(client_values),):
        raise AggregationError(
            f"got {len(client_values)} client values but update_weights has shape "
            f"{weights.shape}; pass exactly one update weight per client"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise AggregationError(f"update weights must be finite and >= 0, got {weights.tolist()}")
    reference = [np.shape(a) for a in client_values[0]]
    for index, value in enumerate(client_values[1:], start=1):
        shapes = [np.shape(a) for a in value]
        if shapes != reference:
            raise AggregationError(
                f"client value {index} has array shapes {shapes}, but client value 0 has "
                f"{reference}; every client must send one array per trainable variable"
            )
    return weights


def weighted_sum(client_values: Sequence[ClientValue], weights: np.ndarray) -> list[np.ndarray]:
    """Sum over clients of ``weights[i] * client_values[i]``, accumulated in float64."""
    totals = [np.zeros(np.shape(a), dtype=np.float64) for a in client_values[0]]
    for weight, value in zip(weights, client_values):
        if weight == 0:
            continue  # also keeps a zero-weight client's NaN out of the sum
        for total, array in zip(totals, value):
            total += weight * np.asarray(array, dtype=np.float64)
    return totals
