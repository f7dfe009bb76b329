"""Tree-aggregation noise for private prefix sums (the binary mechanism).

Dwork, Naor, Pitassi, Rothblum 2010 and Chan, Shi, Song 2011; as used by
DP-FTRL (Kairouz, McMahan, Song, Thakkar, Thakurta, Xu, "Practical and Private
(Deep) Learning without Sampling or Shuffling", ICML 2021, Section 3).

The leaves of a tree are rounds ``1, 2, ...``. Node ``(level, index)`` covers
the dyadic interval of rounds ``[(index - 1) * 2**level + 1, index * 2**level]``
and carries its own Gaussian noise. The prefix ``[1..t]`` is the disjoint union
of one node per set bit of ``t`` (at most ``ceil(log2(t + 1))`` nodes), so the
noisy prefix sum is the true prefix sum plus the sum of those nodes' noise.
This is the plain tree, not Honaker's "efficient" variant: each prefix's noise
has variance ``popcount(t) * std**2``.

A node's noise is drawn from ``np.random.default_rng([seed, tree, level,
index])``, so nothing but the seed needs to be stored and any node's noise can
be drawn again, bit for bit, when a run resumes.
"""

from __future__ import annotations

import numpy as np

Node = tuple[int, int]  # (level, 1-based index within the level)


def prefix_nodes(t: int) -> list[Node]:
    """The nodes whose intervals partition rounds ``[1..t]`` (none for ``t == 0``), largest first."""
    if t < 0:
        raise ValueError(f"t={t} must be >= 0")
    nodes, covered = [], 0
    for level in reversed(range(t.bit_length())):
        if t >> level & 1:
            covered += 1 << level
            nodes.append((level, covered >> level))
    return nodes


def depth(steps: int) -> int:
    """Most nodes any one leaf of a ``steps``-leaf tree is in: ``ceil(log2(steps + 1))``.

    Only nodes inside ``[1..steps]`` are ever used, at most one per level
    ``0..floor(log2(steps))``.
    """
    return int(steps).bit_length()


def node_noise(seed: int, tree: int, node: Node, std: float, size: int) -> np.ndarray:
    """The noise of one node of tree number ``tree`` (``size`` coordinates, N(0, std**2) each)."""
    level, index = node
    return np.random.default_rng([seed, tree, level, index]).normal(0.0, std, size=size)


def residual_noise(seed: int, tree: int, t: int, std: float, size: int) -> np.ndarray:
    """Prefix noise of ``[1..t]`` minus that of ``[1..t-1]``, in the same tree.

    Nodes shared by both prefixes cancel exactly, so they are not drawn: only
    the one node ending at ``t`` is added and the smaller ones it replaces are
    subtracted (``t = 6``: add ``[5..6]``, subtract ``[5]``).
    """
    new, old = prefix_nodes(t), prefix_nodes(t - 1)
    total = np.zeros(size)
    for node in new:
        if node not in old:
            total += node_noise(seed, tree, node, std, size)
    for node in old:
        if node not in new:
            total -= node_noise(seed, tree, node, std, size)
    return total
