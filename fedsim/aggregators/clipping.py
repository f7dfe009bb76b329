"""L2 norm clipping of client values, with a fixed or adaptive clip norm.

Fixed clipping bounds any one client's influence on the aggregate; the
adaptive clip norm follows Andrew et al., "Differentially Private Learning
with Adaptive Clipping", NeurIPS 2021 (see ``norm_bound``).
"""

from __future__ import annotations

from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators.base import (
    AggregationOutput,
    Aggregator,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.norm_bound import NormBound
from fedsim.aggregators.validation import aggregator, optional_quantile, positive
from fedsim.aggregators.vectors import flatten, global_norm, scale


def clip(value: ClientValue, clip_norm: float) -> tuple[list[np.ndarray], bool]:
    """Scales ``value`` down to global L2 norm ``clip_norm`` if it is larger.

    Returns the clipped value and whether it was clipped.
    """
    norm = global_norm(value)
    if norm <= clip_norm:
        return list(value), False
    return scale(value, clip_norm / norm), True


def clipped_sum(values: Sequence[ClientValue], clip_norm: float, size: int) -> tuple[np.ndarray, int]:
    """The flat sum of ``values`` each clipped to ``clip_norm`` (``size`` coordinates; zeros for
    no values), and how many were clipped: what a DP mechanism adds its noise to."""
    total, num_clipped = np.zeros(size), 0
    for value in values:
        clipped, was_clipped = clip(value, clip_norm)
        total += flatten(clipped)
        num_clipped += was_clipped
    return total, num_clipped


@attrs.frozen
class Clipping:
    """Clips each participating client value to the clip norm, then runs ``inner``.

    With ``target_quantile`` set, ``clip_norm`` is only the initial clip norm and
    it adapts each round towards that quantile of the participating norms.
    """

    inner: Aggregator = attrs.field(validator=aggregator)
    clip_norm: float = attrs.field(default=1.0, validator=positive)
    target_quantile: float | None = attrs.field(default=None, validator=optional_quantile)
    learning_rate: float = attrs.field(default=0.2, validator=positive)

    @property
    def bound(self) -> NormBound:
        return NormBound(self.clip_norm, self.target_quantile, self.learning_rate)

    def initialize(self) -> AggregatorState:
        return {"clip_norm": self.bound.initialize(), "inner": self.inner.initialize()}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        clip_norm = state["clip_norm"]
        clipped_values, norms, num_clipped = [], [], 0
        for value, weight in zip(client_values, weights):
            if weight == 0:
                clipped_values.append(value)  # does not count, so not clipped
                continue
            norms.append(global_norm(value))
            clipped, was_clipped = clip(value, clip_norm)
            clipped_values.append(clipped)
            num_clipped += was_clipped
        inner = self.inner.next(state["inner"], clipped_values, weights, client_ids=client_ids)
        new_state = {
            "clip_norm": self.bound.update(clip_norm, np.asarray(norms)),
            "inner": inner.state,
        }
        measurements = {
            **inner.measurements,
            "clip/clip_norm": clip_norm,
            "clip/num_clipped": float(num_clipped),
        }
        return AggregationOutput(inner.result, new_state, measurements)
