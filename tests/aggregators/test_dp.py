"""DP-FedAvg: clipping, noise calibration and privacy accounting."""

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from fedsim.aggregators import AggregatorConfigError, DPAccounting, DPFedAvg, MeanAggregator
from tests.aggregators.helpers import from_vectors, run, to_vector


def test_without_noise_and_with_a_loose_clip_it_is_the_plain_mean():
    vectors = np.random.default_rng(0).normal(size=(6, 7))
    dp = DPFedAvg(clip_norm=100.0, noise_multiplier=0.0, population_size=60, clients_per_round=6)
    output = run(dp, from_vectors(vectors), np.arange(1.0, 7.0))
    plain = run(MeanAggregator(weighted=False), from_vectors(vectors)).result
    np.testing.assert_allclose(to_vector(output.result), to_vector(plain), rtol=1e-12)
    assert output.measurements["dp/num_clipped"] == 0


def test_noise_std_matches_z_times_clip_over_denominator():
    z, clip, denominator = 1.3, 0.7, 10
    dp = DPFedAvg(
        clip_norm=clip, noise_multiplier=z, population_size=1000, clients_per_round=denominator
    )
    zeros = [[np.zeros(5000)] for _ in range(8)]
    state, draws = dp.initialize(), []
    for _ in range(10):
        output = dp.next(state, zeros, np.ones(8))
        state = output.state
        draws.append(output.result[0])
    expected = z * clip / denominator
    assert abs(np.std(draws) - expected) < 0.05 * expected
    assert abs(np.mean(draws)) < 0.05 * expected
    assert output.measurements["dp/noise_std"] == pytest.approx(expected)


def test_noise_is_reproducible_from_the_state():
    dp = DPFedAvg(
        clip_norm=1.0, noise_multiplier=1.0, population_size=100, clients_per_round=5, seed=4
    )
    values = from_vectors(np.ones((5, 7)))
    first = run(dp, values)
    again = run(dp, values)
    second = run(dp, values, state=first.state)
    np.testing.assert_array_equal(to_vector(first.result), to_vector(again.result))
    assert not np.array_equal(to_vector(first.result), to_vector(second.result))


def epsilon_directly(accountant, event, rounds, delta):
    for _ in range(rounds):
        accountant.compose(event)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(
    "sampling, accountant_name, make_accountant, event",
    [
        (
            "poisson",
            "rdp",
            rdp.RdpAccountant,
            dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)),
        ),
        (
            "poisson",
            "pld",
            pld.PLDAccountant,
            dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)),
        ),
        (
            "fixed_size",
            "rdp",
            lambda: rdp.RdpAccountant(
                neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
            ),
            dp_accounting.SampledWithoutReplacementDpEvent(
                1000, 10, dp_accounting.GaussianDpEvent(1.1)
            ),
        ),
    ],
)
def test_reported_epsilon_matches_dp_accounting(sampling, accountant_name, make_accountant, event):
    dp = DPFedAvg(
        clip_norm=1.0,
        noise_multiplier=1.1,
        population_size=1000,
        clients_per_round=10,
        sampling=sampling,
        accountant=accountant_name,
        target_delta=1e-5,
    )
    state = dp.initialize()
    for _ in range(3):
        output = dp.next(state, [[np.zeros(3)]], np.ones(1))
        state = output.state
    expected = epsilon_directly(make_accountant(), event, 3, 1e-5)
    assert output.measurements["dp/epsilon"] == pytest.approx(expected, rel=1e-6)
    assert output.measurements["dp/delta"] == 1e-5


def test_find_noise_multiplier_hits_the_target_epsilon():
    accounting = DPAccounting(population_size=1000, clients_per_round=20)
    z = accounting.find_noise_multiplier(target_epsilon=2.0, rounds=50, tolerance=1e-3)
    assert accounting.epsilon(z, 50) <= 2.0
    assert accounting.epsilon(z - 2e-3, 50) > 2.0


def test_pld_with_fixed_size_sampling_is_rejected():
    with pytest.raises(AggregatorConfigError, match="accountant='pld' does not support"):
        DPAccounting(
            population_size=100, clients_per_round=10, sampling="fixed_size", accountant="pld"
        )


def test_epsilon_without_noise_is_infinite():
    assert DPAccounting(population_size=100, clients_per_round=10).epsilon(0.0, 1) == np.inf
