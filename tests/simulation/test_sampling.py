"""Samplers and availability: determinism from (seed, round), distinctness, proportions."""
import numpy as np
import pytest

from fedsim.simulation.sampling import (
    Dropout,
    RoundRobinSampler,
    SamplingError,
    Stragglers,
    UniformSampler,
    WeightedSampler,
)


def test_uniform_sampler_is_unchanged_and_deterministic():
    sampler = UniformSampler(3, seed=5)
    np.testing.assert_array_equal(sampler.sample(2, 10), np.random.default_rng([5, 2]).choice(10, 3, replace=False))
    with pytest.raises(SamplingError, match="cohort_size=3"):
        sampler.sample(1, 2)


def test_weighted_sampler_favours_large_clients_without_replacement():
    weights = np.array([1.0, 1.0, 1.0, 97.0, 0.0])
    sampler = WeightedSampler(2, weights, seed=1)
    cohorts = [sampler.sample(r, 5) for r in range(1, 401)]
    assert all(len(set(c)) == 2 and 4 not in c for c in cohorts)
    assert sum(3 in c for c in cohorts) >= 395  # misses it with probability 3/100 * 2/99 per round
    np.testing.assert_array_equal(cohorts[9], sampler.sample(10, 5))
    with pytest.raises(SamplingError, match="5 entries"):
        sampler.sample(1, 6)
    with pytest.raises(ValueError, match="cohort_size=5"):
        WeightedSampler(5, weights)


def test_round_robin_visits_everyone_once_per_cycle():
    sampler = RoundRobinSampler(3, seed=2)
    first_cycle = np.concatenate([sampler.sample(r, 9) for r in (1, 2, 3)])
    assert sorted(first_cycle) == list(range(9))
    np.testing.assert_array_equal(sampler.sample(4, 9), sampler.sample(1, 9))
    assert list(RoundRobinSampler(4, shuffle=False).sample(3, 10)) == [8, 9, 0, 1]


def test_dropout_and_stragglers_are_seeded_per_round_and_client():
    dropout = Dropout(0.3, seed=4)
    draws = [dropout.reports(r, f"c{i}") for r in range(1, 101) for i in range(20)]
    assert 0.6 < np.mean(draws) < 0.8
    assert draws == [Dropout(0.3, seed=4).reports(r, f"c{i}") for r in range(1, 101) for i in range(20)]
    stragglers = Stragglers(0.9, seed=4)
    epochs = np.array([stragglers.local_epochs(r, i, 20) for r in range(1, 101) for i in range(20)])
    assert 0.85 < np.mean(epochs < 20) < 0.95 and epochs.min() == 1 and epochs.max() == 20
    with pytest.raises(ValueError, match="rate=1.5"):
        Dropout(1.5)
