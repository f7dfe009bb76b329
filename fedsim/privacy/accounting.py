"""Epsilon from a mechanism's DP event, with Google's ``dp_accounting``.

Two accountants: Renyi DP (``rdp``, Mironov 2017) and privacy loss
distributions (``pld``, tighter; dp_accounting's PLD accountant cannot
account fixed-size sampling without replacement). The neighbouring relation
comes from the run's ``Participation``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

ACCOUNTANTS = ("rdp", "pld")


class AccountingError(ValueError):
    """An accountant cannot account a mechanism as configured."""


def check_accountant(kind: str, sampling: str) -> None:
    """Raises when ``kind`` is unknown or cannot account ``sampling``."""
    if kind not in ACCOUNTANTS:
        raise AccountingError(f"accountant={kind!r} is not one of {list(ACCOUNTANTS)}")
    if kind == "pld" and sampling == "fixed_size":
        raise AccountingError(
            "accountant='pld' cannot account fixed-size cohorts (sampling without replacement) in "
            "dp_accounting; use accountant='rdp', or a Poisson sampler (sampler = {name = \"poisson\", rate = q})"
        )


def make_accountant(kind: str, relation: dp_accounting.NeighboringRelation) -> dp_accounting.PrivacyAccountant:
    """A fresh accountant of ``kind`` for ``relation``."""
    if kind == "rdp":
        return rdp.RdpAccountant(neighboring_relation=relation)
    if kind == "pld":
        return pld.PLDAccountant(neighboring_relation=relation)
    raise AccountingError(f"accountant={kind!r} is not one of {list(ACCOUNTANTS)}")


@functools.lru_cache(maxsize=64)
def rdp_curve(event: dp_accounting.DpEvent, relation: dp_accounting.NeighboringRelation) -> tuple[np.ndarray, np.ndarray]:
    """(orders, RDP) of one ``event``, at dp_accounting's default orders. Computing the RDP of sampling without replacement takes
    about a second, and a run asks for epsilon every round: RDP composes linearly, so one
    round's curve times the rounds is the run's. (dp_accounting keeps the curve private.)"""
    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    _check_supported(accountant, event, "rdp")
    accountant.compose(event)
    return np.asarray(accountant._orders), np.asarray(accountant._rdp)


def _check_supported(accountant: dp_accounting.PrivacyAccountant, event: dp_accounting.DpEvent, kind: str) -> None:
    if not accountant.supports(event):
        raise AccountingError(f"accountant={kind!r} cannot account {event}; try accountant='rdp'")


@functools.lru_cache(maxsize=256)
def epsilon(event: dp_accounting.DpEvent, delta: float, kind: str,
            relation: dp_accounting.NeighboringRelation) -> float:
    """Epsilon at ``delta`` of ``event`` (inf for a non-private event, 0 for no event)."""
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return 0.0
    if isinstance(event, dp_accounting.NonPrivateDpEvent):
        return math.inf
    if kind == "rdp":
        count = event.count if isinstance(event, dp_accounting.SelfComposedDpEvent) else 1
        inner = event.event if isinstance(event, dp_accounting.SelfComposedDpEvent) else event
        orders, curve = rdp_curve(inner, relation)
        return float(rdp.rdp_privacy_accountant.compute_epsilon(orders, curve * count, delta)[0])
    accountant = make_accountant(kind, relation)
    _check_supported(accountant, event, kind)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def find_noise_multiplier(
    epsilon_of: Callable[[float], float], target_epsilon: float, tolerance: float = 1e-3
) -> float:
    """Smallest noise multiplier z (within ``tolerance``) with ``epsilon_of(z) <= target_epsilon``.

    ``epsilon_of`` is a mechanism's epsilon as a function of z, e.g.
    ``lambda z: attrs.evolve(dp, noise_multiplier=z).epsilon(rounds)``.
    """
    if not target_epsilon > 0:
        raise AccountingError(f"target_epsilon={target_epsilon!r} must be > 0")
    low, high = 0.0, 1.0
    while epsilon_of(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise AccountingError(
                f"no noise multiplier up to 1e6 reaches target_epsilon={target_epsilon}; "
                "raise the target or run fewer rounds"
            )
    # Invariant: epsilon_of(low) > target >= epsilon_of(high) (epsilon_of(0) is inf).
    while high - low > tolerance:
        middle = (low + high) / 2
        if epsilon_of(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    return high
