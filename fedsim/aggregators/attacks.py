"""Byzantine clients, simulated: replace some client values before aggregation.

Attack kinds as used to evaluate robust rules in Blanchard et al., NeurIPS
2017 (Gaussian), Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD",
2018 (sign flip, scaling) and Li et al., "RSA", AAAI 2019 (sign flip).

Each round ``floor(fraction * n)`` of the ``n`` participating clients are
chosen at random (seeded by ``[seed, round]``) and their values replaced:

- ``sign_flip``: ``-scale * value``
- ``scaled``: ``scale * value``
- ``gaussian``: i.i.d. ``N(0, noise_std**2)`` per coordinate
- ``constant``: every coordinate set to ``constant``

Attackers keep their update weight; rules that trust weights are meant to
look bad here.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np

from fedsim.aggregators import seeded
from fedsim.aggregators.base import (
    AggregationOutput,
    Aggregator,
    AggregatorState,
    ClientIds,
    ClientValue,
    check_client_values,
)
from fedsim.aggregators.validation import (
    aggregator,
    in_interval,
    int_at_least,
    one_of,
    positive,
)
from fedsim.aggregators.vectors import scale as scale_value

ATTACK_KINDS = ("sign_flip", "scaled", "gaussian", "constant")


@attrs.frozen
class ByzantineAttack:
    """Makes a ``fraction`` of each cohort Byzantine, then runs ``inner``."""

    inner: Aggregator = attrs.field(validator=aggregator)
    fraction: float = attrs.field(default=0.2, validator=in_interval(0.0, 1.0))
    kind: str = attrs.field(default="sign_flip", validator=one_of(*ATTACK_KINDS))
    scale: float = attrs.field(default=1.0, validator=positive)
    noise_std: float = attrs.field(default=1.0, validator=positive)
    constant: float = attrs.field(default=1.0, converter=float)
    seed: int = attrs.field(default=0, validator=int_at_least(0))

    def initialize(self) -> AggregatorState:
        return seeded.initial_state(self.seed, self.inner)

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        weights = check_client_values(client_values, update_weights)
        rng = np.random.default_rng([state["seed"], state["round"]])
        candidates = np.flatnonzero(weights > 0)
        # The epsilon absorbs rounding: 0.29 * 100 is 28.999999999999996, meant as 29.
        num_byzantine = math.floor(self.fraction * candidates.size + 1e-9)
        byzantine = rng.choice(candidates, num_byzantine, replace=False)
        values = list(client_values)
        for index in byzantine:
            values[index] = self.corrupt(client_values[index], rng)
        inner = self.inner.next(state["inner"], values, weights, client_ids=client_ids)
        new_state = seeded.next_state(state, inner.state)
        measurements = {**inner.measurements, "attack/num_byzantine": float(num_byzantine)}
        return AggregationOutput(inner.result, new_state, measurements)

    def corrupt(self, value: ClientValue, rng: np.random.Generator) -> list[np.ndarray]:
        """The value a Byzantine client sends instead of ``value``."""
        if self.kind == "sign_flip":
            return scale_value(value, -self.scale)
        if self.kind == "scaled":
            return scale_value(value, self.scale)
        if self.kind == "gaussian":
            return [
                rng.normal(0.0, self.noise_std, np.shape(a)).astype(np.asarray(a).dtype)
                for a in value
            ]
        return [np.full_like(np.asarray(a), self.constant) for a in value]
