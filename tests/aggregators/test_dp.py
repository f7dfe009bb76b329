"""DP-FedAvg: clipping, noise calibration, adaptive clipping, and epsilon checked independently.

Epsilon references never build fedsim's DP event: they are the closed-form RDP
of the Gaussian mechanism, the issue's corrected figures for fixed-size
cohorts, and dp-accounting's own Poisson accountants as brackets.
"""

import math

import attrs
import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from fedsim.aggregators import AggregatorConfigError, DPFedAvg, MeanAggregator, build_aggregator
from fedsim.privacy import Participation, ParticipationError, find_noise_multiplier
from fedsim.privacy.accounting import AccountingError
from tests.aggregators.helpers import from_vectors, run, to_vector

FIXED = Participation.fixed_size(1000, 10)


def test_without_noise_and_with_a_loose_clip_it_is_the_plain_mean():
    vectors = np.random.default_rng(0).normal(size=(6, 7))
    dp = DPFedAvg(clip_norm=100.0, noise_multiplier=0.0, participation=Participation.fixed_size(60, 6))
    output = run(dp, from_vectors(vectors), np.arange(1.0, 7.0))
    plain = run(MeanAggregator(weighted=False), from_vectors(vectors)).result
    np.testing.assert_allclose(to_vector(output.result), to_vector(plain), rtol=1e-12)
    assert output.measurements["dp/num_clipped"] == 0


def test_poisson_divides_by_the_expected_cohort_not_the_realised_one():
    vectors = np.ones((3, 7))  # 3 clients took part; expected q N = 0.05 * 100 = 5
    dp = DPFedAvg(clip_norm=10.0, noise_multiplier=0.0, participation=Participation.poisson(100, 0.05))
    np.testing.assert_allclose(to_vector(run(dp, from_vectors(vectors)).result), np.full(7, 3 / 5))


def draws(dp, rounds=10, clients=8, size=5000):
    zeros = [[np.zeros(size)] for _ in range(clients)]
    state, results = dp.initialize(), []
    for _ in range(rounds):
        output = dp.next(state, zeros, np.ones(clients))
        state = output.state
        results.append(output.result[0])
    return np.array(results), output


def test_noise_std_is_z_times_clip_over_the_expected_cohort():
    z, clip = 1.3, 0.7
    values, output = draws(DPFedAvg(clip_norm=clip, noise_multiplier=z, participation=FIXED))
    expected = z * clip / 10
    assert abs(np.std(values) - expected) < 0.02 * expected
    assert abs(np.mean(values)) < 0.02 * expected
    assert output.measurements["dp/noise_std"] == pytest.approx(expected)


def test_adaptive_clipping_splits_z_between_the_update_and_the_count():
    """Andrew et al. 2021: z_update = (z^-2 - (2 sigma_b)^-2)^-1/2; the update noise measured has it."""
    z, clip, sigma_b = 1.0, 0.5, 1.0
    dp = DPFedAvg(clip_norm=clip, noise_multiplier=z, target_quantile=0.5, clipped_count_stddev=sigma_b,
                  participation=FIXED)
    z_update = 1 / math.sqrt(1 / z**2 - 1 / (2 * sigma_b) ** 2)  # 1.1547
    assert dp.update_noise_multiplier == pytest.approx(z_update)
    # All-zero clients: each norm 0 <= C, so C shrinks by exp(-0.2 (b - 0.5)) each round; rerun at fixed C.
    values, _ = draws(attrs.evolve(dp, clip_learning_rate=1e-12))
    expected = z_update * clip / 10
    assert abs(np.std(values) - expected) < 0.02 * expected


def test_adaptive_clipping_count_noise_and_the_geometric_update():
    """The noisy unclipped fraction has std sigma_b / m; C moves by exp(-eta (b - gamma))."""
    sigma_b, m = 2.0, 10
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, target_quantile=0.3, clip_learning_rate=0.5,
                  clipped_count_stddev=sigma_b, participation=FIXED, seed=3)
    # 4 clients of norm 0.5 (unclipped) and 4 of norm 2 (clipped): true fraction over m = (4 - 8/2)/10 + 0.5 = 0.5
    values = [[np.array([0.5, 0.0])]] * 4 + [[np.array([2.0, 0.0])]] * 4
    fractions, next_clips = [], []
    for round_num in range(4000):
        output = dp.next({"seed": 3, "round": round_num, "clip_norm": 1.0}, values, np.ones(8))
        fractions.append(output.measurements["dp/unclipped_fraction"])
        next_clips.append(output.state["clip_norm"])
    fractions = np.array(fractions)
    assert abs(np.mean(fractions) - 0.5) < 0.02 * 0.5 + 3 * sigma_b / m / math.sqrt(4000)
    assert abs(np.std(fractions) - sigma_b / m) < 0.02 * sigma_b / m
    np.testing.assert_allclose(next_clips, np.exp(-0.5 * (fractions - 0.3)), rtol=1e-12)


def test_adaptive_clipping_refuses_a_count_noise_that_leaves_none_for_the_update():
    with pytest.raises(AggregatorConfigError, match="2 \\* clipped_count_stddev > noise_multiplier"):
        DPFedAvg(clip_norm=1.0, noise_multiplier=3.0, target_quantile=0.5, clipped_count_stddev=1.0,
                 participation=FIXED)


def test_noise_is_reproducible_from_the_state():
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, participation=Participation.fixed_size(100, 5), seed=4)
    values = from_vectors(np.ones((5, 7)))
    first = run(dp, values)
    again = run(dp, values)
    second = run(dp, values, state=first.state)
    np.testing.assert_array_equal(to_vector(first.result), to_vector(again.result))
    assert not np.array_equal(to_vector(first.result), to_vector(second.result))


# Epsilon ---------------------------------------------------------------------------------------
def rdp_to_epsilon(rdp_of_order, delta: float) -> float:
    """The RDP -> (epsilon, delta) conversion of Canonne, Kamath, Steinke 2020 (Prop. 12), minimised over a
    fine grid of orders: eps = RDP(a) + log((a-1)/a) - (log delta + log a) / (a - 1)."""
    orders = np.concatenate([np.linspace(1.01, 10, 20000), np.linspace(10, 2000, 200000)])
    return float(np.min(rdp_of_order(orders) + np.log1p(-1 / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)))


@pytest.mark.parametrize("z, rounds", [(5.0, 100), (1.0, 10), (20.0, 1000)])
def test_epsilon_without_sampling_is_the_closed_form_gaussian(z, rounds):
    """T rounds of the Gaussian mechanism, sensitivity C, noise z C: RDP(a) = T a / (2 z^2) (Mironov 2017)."""
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=z, participation=Participation.none(500, 500))
    expected = rdp_to_epsilon(lambda a: rounds * a / (2 * z**2), 1e-5)
    # fedsim's accountant minimises over dp-accounting's finite list of orders: at most a hair above.
    assert expected <= dp.epsilon(rounds) <= 1.01 * expected


@pytest.mark.parametrize("population, cohort, z, rounds, corrected", [
    (1000, 10, 1.1, 100, 7.57),
    (3400, 100, 1.0, 1500, 145.5),
])
def test_fixed_size_cohorts_are_accounted_with_sensitivity_2c(population, cohort, z, rounds, corrected):
    """The issue's corrected figures (replace-one, multiplier z / 2); the old report was 1.19 and 16.1."""
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=z, participation=Participation.fixed_size(population, cohort))
    assert dp.epsilon(rounds) == pytest.approx(corrected, rel=0.01)


def test_poisson_epsilon_is_bracketed_by_dp_accountings_rdp_and_pld():
    q, z, rounds, delta = 0.01, 1.1, 300, 1e-5
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    by_rdp, by_pld = rdp.RdpAccountant(), pld.PLDAccountant()
    by_rdp.compose(event, rounds)
    by_pld.compose(event, rounds)
    high, low = by_rdp.get_epsilon(delta), by_pld.get_epsilon(delta)
    assert low < high
    for kind in ("rdp", "pld"):
        dp = DPFedAvg(clip_norm=1.0, noise_multiplier=z, accountant=kind, target_delta=delta,
                      participation=Participation.poisson(5000, q))
        assert low * (1 - 1e-3) <= dp.epsilon(rounds) <= high * (1 + 1e-6)


def test_adaptive_clipping_is_accounted_as_one_gaussian_of_multiplier_z():
    """Update (z_update, sensitivity C) and count (sigma_b, sensitivity 1/2) compose to RDP
    a/2 (z_update^-2 + (2 sigma_b)^-2) = a / (2 z^2): the closed form of z itself."""
    z, rounds = 2.0, 50
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=z, target_quantile=0.5, clipped_count_stddev=5.0,
                  participation=Participation.none(100, 100))
    per_round = 0.5 * (dp.update_noise_multiplier**-2 + (2 * 5.0) ** -2)
    expected = rdp_to_epsilon(lambda a: rounds * a * per_round, 1e-5)
    assert expected <= dp.epsilon(rounds) <= 1.01 * expected


def test_epsilon_is_reported_every_round_with_what_it_assumes():
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.1, participation=FIXED)
    state, epsilons = dp.initialize(), []
    for _ in range(3):
        output = dp.next(state, [[np.zeros(3)]], np.ones(1))
        state = output.state
        epsilons.append(output.measurements["dp/epsilon"])
    assert epsilons == sorted(epsilons) and epsilons[0] > 0
    assert output.measurements["dp/delta"] == 1e-5


def test_find_noise_multiplier_hits_the_target_epsilon():
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, participation=Participation.poisson(1000, 0.02))
    epsilon_of = lambda z: attrs.evolve(dp, noise_multiplier=z).epsilon(50)  # noqa: E731
    z = find_noise_multiplier(epsilon_of, target_epsilon=2.0, tolerance=1e-3)
    assert epsilon_of(z) <= 2.0 < epsilon_of(z - 2e-3)


def test_epsilon_without_noise_is_infinite():
    assert DPFedAvg(clip_norm=1.0, noise_multiplier=0.0, participation=FIXED).epsilon(1) == np.inf


# What ran vs what was declared ----------------------------------------------------------------
def test_pld_cannot_account_fixed_size_cohorts():
    with pytest.raises(AccountingError, match="accountant='pld' cannot account fixed-size cohorts"):
        DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, accountant="pld", participation=FIXED)


@pytest.mark.parametrize("declared, message", [
    ({"population_size": 1_000_000}, "declares population_size=1000000, but the run has population_size=30"),
    ({"clients_per_round": 1}, "declares clients_per_round=1, but the run has clients_per_round=10"),
    ({"sampling": "poisson"}, "declares sampling='poisson', but the run has sampling='fixed_size'"),
])
def test_a_declared_value_that_disagrees_with_the_run_is_an_error(declared, message):
    spec = [{"name": "dp_fedavg", "clip_norm": 1.0, "noise_multiplier": 1.0, **declared}]
    with pytest.raises(AggregatorConfigError, match=message):
        build_aggregator(spec, participation=Participation.fixed_size(30, 10))


def test_declared_values_that_match_the_run_are_accepted():
    spec = [{"name": "dp_fedavg", "clip_norm": 1.0, "noise_multiplier": 1.0, "population_size": 30,
             "clients_per_round": 10, "sampling": "fixed_size"}]
    dp = build_aggregator(spec, participation=Participation.fixed_size(30, 10))
    assert dp.participation == Participation.fixed_size(30, 10)


def test_a_mechanism_without_participation_refuses_to_run():
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0)
    with pytest.raises(ParticipationError, match="participation=sampler.participation"):
        dp.next(dp.initialize(), [[np.zeros(2)]], np.ones(1))


def test_two_mechanisms_in_one_chain_are_refused():
    from fedsim.privacy import mechanism

    inner = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0)
    outer = attrs.evolve(inner)
    outer = type("Wrapped", (), {"inner": inner, "dp_event": lambda self, r: None})()
    with pytest.raises(ParticipationError, match="holds 2 privacy mechanisms"):
        mechanism.find(outer)
