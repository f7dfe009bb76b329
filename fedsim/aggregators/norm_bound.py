"""Norm bounds that are fixed or track a target quantile of client norms.

Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with
Adaptive Clipping", NeurIPS 2021.

The adaptive bound follows the paper's geometric update, without the noise
on the counts (this bound is not used for privacy accounting):

    C <- C * exp(-learning_rate * (fraction of norms <= C  -  target_quantile))

so ``C`` grows while fewer than ``target_quantile`` of the norms are below it
and shrinks otherwise, settling near that quantile of the norm distribution.
Clipping and zeroing share this logic through ``NormBound``.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from fedsim.aggregators.validation import optional_quantile, positive


@attrs.frozen
class NormBound:
    """A bound on client norms: fixed (``target_quantile=None``) or adaptive.

    ``initial`` is the bound for round one; the state is the current bound.
    """

    initial: float = attrs.field(validator=positive)
    target_quantile: float | None = attrs.field(default=None, validator=optional_quantile)
    learning_rate: float = attrs.field(default=0.2, validator=positive)

    @property
    def adaptive(self) -> bool:
        return self.target_quantile is not None

    def initialize(self) -> float:
        return float(self.initial)

    def update(self, bound: float, norms: np.ndarray) -> float:
        """The bound for the next round, given this round's participating norms.

        Non-finite norms count as above the bound, so NaN updates push an
        adaptive bound up slightly rather than poisoning it.
        """
        if not self.adaptive or norms.size == 0:
            return bound
        below = float(np.mean(np.isfinite(norms) & (norms <= bound)))
        return float(bound * math.exp(-self.learning_rate * (below - self.target_quantile)))
