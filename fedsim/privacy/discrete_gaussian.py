"""The discrete Gaussian: an exact sampler and the Renyi DP of a sum of them.

Sampler: Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential
Privacy", NeurIPS 2020, Algorithms 1-3. ``N_Z(0, sigma^2)`` puts mass
``exp(-x^2 / (2 sigma^2)) / Z`` on every integer ``x``. It is drawn by
rejection from a discrete Laplace of scale ``t = floor(sigma) + 1``, itself
drawn from a uniform ``U`` in ``{0..t-1}`` and a geometric ``V``. Every coin is
a Bernoulli of ``exp(-gamma)``, split as ``exp(-1)^floor(gamma) *
exp(-frac(gamma))`` so that each coin has probability at least ``1/e``: a coin
compares a float64 uniform (a multiple of 2**-53) with its probability, so the
output law is exact up to the float64 rounding of those probabilities
(relative errors of order 2**-52 per coin), and the tails are not cut off.
The output is an integer built from integers, so no low-order bits of a
float leak the input (Mironov 2012). Vectorized: all coordinates draw at
once and only the rejected ones draw again.

Privacy of a sum: Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation", ICML 2021,
Theorem 1 in its Renyi form (the form of the authors' accounting code). The
sum of ``n`` independent ``N_Z(0, sigma^2)^d`` is not a discrete Gaussian,
but for a query of L2 sensitivity ``Delta`` (sigma and Delta on the integer
grid) and every order ``alpha >= 1``

    D_alpha <= min( alpha s^2 / 2 + tau d,  alpha / 2 (s + tau sqrt(d))^2 ),
    s = Delta / (sqrt(n) sigma),  tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)).

``tau`` measures how far the sum is from ``N_Z(0, n sigma^2)``; it vanishes
quickly once ``sigma`` exceeds one grid step. ``Delta`` is the norm bound
after the conditional rounding of Section 4.1 (``inflated_norm``,
``conditional_round``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

_INV_E = math.exp(-1.0)
MAX_ROUNDING_TRIES = 1000
ORDERS = tuple(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)  # the RDP accountant's own orders


def _successes_before_failure(size: int, rng: np.random.Generator) -> np.ndarray:
    """For each of ``size`` runs of Bernoulli(1/e) coins, how many succeed before the first
    fails: ``P(count >= k) = exp(-k)`` (the geometric ``V`` of CKS Algorithm 2)."""
    counts = np.zeros(size, dtype=np.int64)
    pending = np.arange(size)
    while pending.size:
        heads = rng.random(pending.size) < _INV_E
        pending = pending[heads]
        counts[pending] += 1
    return counts


def bernoulli_exp(gamma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Bernoulli(``exp(-gamma)``) coin per entry of ``gamma >= 0`` (CKS Algorithm 1's
    decomposition: ``floor(gamma)`` coins of ``1/e`` and one of ``exp(-frac(gamma))``)."""
    gamma = np.asarray(gamma, dtype=np.float64)
    whole = np.floor(gamma)
    result = rng.random(gamma.shape) < np.exp(-(gamma - whole))
    # All floor(gamma) coins of 1/e succeed iff a run of such coins lasts that long.
    needed = np.flatnonzero(result & (whole > 0))
    if needed.size:
        runs = _successes_before_failure(needed.size, rng)
        result.flat[needed] = runs >= whole.flat[needed]
    return result


def sample(sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` independent draws of ``N_Z(0, sigma^2)`` as int64 (CKS Algorithm 3);
    zeros when ``sigma == 0``."""
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma={sigma!r} must be a finite number >= 0")
    out = np.zeros(size, dtype=np.int64)
    if sigma == 0:
        return out
    t = math.floor(sigma) + 1
    pending = np.arange(size)
    while pending.size:
        k = pending.size
        # Discrete Laplace of scale t (CKS Algorithm 2): X = U + t V with U accepted w.p. exp(-U/t).
        u = rng.integers(0, t, size=k)
        accept = bernoulli_exp(u / t, rng)
        x = u + t * _successes_before_failure(k, rng)
        negative = rng.integers(0, 2, size=k).astype(bool)
        accept &= ~(negative & (x == 0))  # -0 would count zero twice
        y = np.where(negative, -x, x)
        # Gaussian acceptance (CKS Algorithm 3).
        accept &= bernoulli_exp((np.abs(y) - sigma**2 / t) ** 2 / (2 * sigma**2), rng)
        out[pending[accept]] = y[accept]
        pending = pending[~accept]
    return out


def inflated_norm(clip_norm: float, gamma: float, beta: float, dimension: int) -> float:
    """L2 norm bound ``Delta`` of a vector of norm <= ``clip_norm`` after rounding its
    ``dimension`` coordinates to multiples of ``gamma`` at random, conditionally on the
    bound when ``beta > 0`` (Kairouz et al. 2021, Theorem 1, in the clip norm's units):
    ``min(C + gamma sqrt(d),
    sqrt(C^2 + gamma^2 d / 4 + sqrt(2 ln(1/beta)) gamma (C + gamma sqrt(d) / 2)))``.
    The first term always holds (no coordinate moves a full step); with ``beta == 0``
    it is the bound."""
    spread = gamma * math.sqrt(dimension)
    bound = clip_norm + spread
    if beta == 0:
        return bound
    slack = math.sqrt(2 * math.log(1 / beta)) * gamma * (clip_norm + spread / 2)
    return min(bound, math.sqrt(clip_norm**2 + spread**2 / 4 + slack))


def conditional_round(scaled: np.ndarray, bound: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Unbiased random rounding of ``scaled`` to integers, redrawn until the L2 norm is at most
    ``bound`` (Kairouz et al. 2021, Section 4.1, with ``bound = inflated_norm / gamma``); the
    rounded vector (int64) and the number of redraws."""
    low = np.floor(scaled)
    for retries in range(MAX_ROUNDING_TRIES):
        rounded = low + (rng.random(scaled.shape) < scaled - low)
        if float(np.dot(rounded, rounded)) <= bound**2:
            return rounded.astype(np.int64), retries
    raise ValueError(f"conditional rounding failed {MAX_ROUNDING_TRIES} times against norm "
                     f"bound {bound:g} grid steps; lower beta (beta=0 never redraws)")


def tau(sigma: float, num_summands: int) -> float:
    """``10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1))`` for ``n = num_summands`` draws of
    ``N_Z(0, sigma^2)``; grows with ``n``, so pass the largest number that can be summed."""
    total, start, chunk = 0.0, 1, 1 << 20
    while start < num_summands:
        k = np.arange(start, min(start + chunk, num_summands), dtype=np.float64)
        total += float(np.sum(np.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1))))
        start += chunk
    return 10.0 * total


def summed_rdp(orders: Sequence[float], scale: float, tau_value: float,
               dimension: int) -> np.ndarray:
    """Renyi DP at ``orders`` of one release of the summed discrete Gaussian, with
    ``scale = Delta / (sqrt(n) sigma)`` and ``dimension`` noised coordinates."""
    alpha = np.asarray(orders, dtype=np.float64)
    linear = alpha * scale**2 / 2 + tau_value * dimension
    shifted = alpha / 2 * (scale + tau_value * math.sqrt(dimension)) ** 2
    return np.minimum(linear, shifted)


def epsilon_from_rdp(orders: Sequence[float], rdp: Sequence[float], delta: float) -> float:
    """Epsilon at ``delta`` of an RDP curve, by the conversion of Canonne, Kamath, Steinke 2020
    (Proposition 12), as dp_accounting's RDP accountant does it."""
    epsilon, _ = rdp_privacy_accountant.compute_epsilon(list(orders), list(rdp), delta)
    return float(epsilon)
