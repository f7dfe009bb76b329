"""Robust rules against hand computations and plain NumPy/SciPy references."""

import itertools

import numpy as np
import pytest
import scipy.optimize

from fedsim.aggregators import (
    AggregationError,
    AggregatorConfigError,
    Bulyan,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    TrimmedMean,
)
from tests.aggregators.helpers import from_vectors, run, to_vector

# Five clients, seven coordinates; client 4 is an outlier in most coordinates.
FIVE = np.array(
    [
        [1.0, -2.0, 0.5, 3.0, 0.0, 1.0, 2.0],
        [2.0, -1.0, 0.0, 4.0, 1.0, 1.5, 2.5],
        [3.0, 0.0, -0.5, 5.0, 2.0, 0.5, 1.5],
        [4.0, 1.0, 1.0, 6.0, 3.0, 2.0, 3.0],
        [100.0, 50.0, -40.0, 60.0, -30.0, 90.0, -80.0],
    ]
)


def test_median_matches_hand_values():
    result = to_vector(run(CoordinateMedian(), from_vectors(FIVE)).result)
    # Sorted columns, middle entry of five.
    np.testing.assert_array_equal(result, [3.0, 0.0, 0.0, 5.0, 1.0, 1.5, 2.0])


def test_trimmed_mean_matches_hand_values():
    # beta=0.2 of 5 clients trims one value from each end per coordinate.
    result = to_vector(run(TrimmedMean(beta=0.2), from_vectors(FIVE)).result)
    expected = [
        (2 + 3 + 4) / 3,
        (-1 + 0 + 1) / 3,
        (-0.5 + 0.0 + 0.5) / 3,
        (4 + 5 + 6) / 3,
        (0 + 1 + 2) / 3,
        (1.0 + 1.5 + 2.0) / 3,
        (1.5 + 2.0 + 2.5) / 3,
    ]
    np.testing.assert_allclose(result, expected, rtol=1e-12)


def test_trimmed_mean_with_beta_zero_is_the_mean():
    result = to_vector(run(TrimmedMean(beta=0.0), from_vectors(FIVE)).result)
    np.testing.assert_allclose(result, FIVE.mean(axis=0), rtol=1e-12)


def test_trimmed_mean_rejects_beta_of_one_half_or_more():
    with pytest.raises(AggregatorConfigError, match=r"beta=0.6 must be in \[0.0, 0.5\)"):
        TrimmedMean(beta=0.6)


# Points for Krum with f=1, so each score sums the n - f - 2 = 2 smallest
# squared distances to other points:
#   a=(0,0): to b 1, c 4, d 8, e 200 -> 1 + 4 = 5
#   b=(1,0): to a 1, c 5, d 5, e 181 -> 1 + 5 = 6
#   c=(0,2): to a 4, b 5, d 4, e 164 -> 4 + 4 = 8
#   d=(2,2): to a 8, b 5, c 4, e 128 -> 4 + 5 = 9
#   e=(10,10): 128 + 164 = 292
KRUM_POINTS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [2.0, 2.0], [10.0, 10.0]])


def krum_values():
    return from_vectors(KRUM_POINTS, shapes=[(2,)])


def test_krum_picks_the_hand_computed_client():
    result = run(Krum(num_byzantine=1), krum_values()).result
    np.testing.assert_array_equal(result[0], [0.0, 0.0])


def test_multi_krum_averages_the_best_scores():
    result = run(Krum(num_byzantine=1, num_selected=3), krum_values()).result
    # The three lowest scores are a, b, c.
    np.testing.assert_allclose(result[0], [1 / 3, 2 / 3], rtol=1e-12)


def test_krum_needs_more_than_2f_plus_2_clients():
    with pytest.raises(AggregationError, match="num_byzantine=2 needs at least 7"):
        run(Krum(num_byzantine=2), krum_values())


def reference_krum_order(points: np.ndarray, f: int) -> list[int]:
    """Brute force: score each point from explicit loops over the others."""
    n = len(points)
    scores = []
    for i in range(n):
        distances = sorted(float(np.sum((points[i] - points[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(distances[: max(n - f - 2, 1)]))
    return sorted(range(n), key=lambda i: scores[i])


def reference_bulyan(points: np.ndarray, f: int) -> np.ndarray:
    remaining = list(range(len(points)))
    selected = []
    for _ in range(len(points) - 2 * f):
        best = remaining[reference_krum_order(points[remaining], f)[0]]
        selected.append(best)
        remaining.remove(best)
    chosen = points[selected]
    beta = len(chosen) - 2 * f
    result = []
    for column in chosen.T:
        median = np.median(column)
        closest = sorted(column, key=lambda x: abs(x - median))[:beta]
        result.append(np.mean(closest))
    return np.array(result)


def test_bulyan_matches_reference():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(7, 7))
    points[6] += 25.0  # one Byzantine client far away
    result = to_vector(run(Bulyan(num_byzantine=1), from_vectors(points)).result)
    np.testing.assert_allclose(result, reference_bulyan(points, 1), rtol=1e-12)


def test_bulyan_needs_4f_plus_3_clients():
    with pytest.raises(AggregationError, match="needs at least 7 participating clients, got 6"):
        run(Bulyan(num_byzantine=1), from_vectors(np.zeros((6, 7))))


def test_geometric_median_matches_scipy_minimizer():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(5, 3))
    points[4] = [20.0, -20.0, 20.0]
    weights = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
    alphas = weights / weights.sum()

    def objective(z):
        return np.sum(alphas * np.linalg.norm(points - z, axis=1))

    best = scipy.optimize.minimize(
        objective,
        points.mean(axis=0),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
    )
    aggregator = GeometricMedian(max_iterations=1000, tolerance=1e-12)
    output = run(aggregator, from_vectors(points, shapes=[(3,)]), weights)
    np.testing.assert_allclose(output.result[0], best.x, atol=1e-4)
    assert objective(output.result[0]) <= best.fun + 1e-9


def test_krum_reference_agrees_on_random_cohorts():
    rng = np.random.default_rng(11)
    for n, f in itertools.product([5, 8], [0, 1]):
        points = rng.normal(size=(n, 7))
        expected = points[reference_krum_order(points, f)[0]]
        result = to_vector(run(Krum(num_byzantine=f), from_vectors(points)).result)
        np.testing.assert_array_equal(result, expected)
