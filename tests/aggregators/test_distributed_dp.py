"""Distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): sampler, encoding, secure sum,
accounting.

Expected values are computed here from the definitions and the paper's formulas, written
out again, not by calling the functions under test.
"""

import math
from statistics import NormalDist

import attrs
import numpy as np
import pytest
from scipy import stats

from fedsim.aggregators.clipping import clip
from fedsim.aggregators.distributed_dp import DistributedDP
from fedsim.aggregators.rotation import unrotate
from fedsim.aggregators.secure_sum import phase_sets
from fedsim.aggregators.validation import AggregatorConfigError
from fedsim.privacy import discrete_gaussian, mechanism
from fedsim.privacy.participation import Participation
from tests.aggregators.helpers import from_vectors, run, to_vector

FIXED = Participation.fixed_size(population_size=1000, cohort_size=10)
RDP_ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]


def exact_pmf(sigma):
    """N_Z(0, sigma^2) on a support wide enough that the rest has mass below 1e-300."""
    support = np.arange(-int(40 * sigma) - 20, int(40 * sigma) + 21)
    weights = np.exp(-support.astype(np.float64) ** 2 / (2 * sigma**2))
    return support, weights / weights.sum()


def ddp(**overrides):
    config = dict(clip_norm=1.0, noise_multiplier=1.0, dimension=7, threshold=8,
                  participation=FIXED, seed=3)
    return DistributedDP(**{**config, **overrides})


def client_vectors(num_clients, dimension=7, seed=0, scale=0.8):
    return np.random.default_rng(seed).normal(scale=scale, size=(num_clients, dimension))


# The sampler ------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.7, 2.0, 6.5, 40.0])
def test_sampler_variance_and_pmf_match_the_discrete_gaussian(sigma):
    draws = discrete_gaussian.sample(sigma, 200_000, np.random.default_rng(int(sigma * 10)))
    support, pmf = exact_pmf(sigma)
    exact_variance = float(np.sum(pmf * support.astype(np.float64) ** 2))
    assert draws.dtype == np.int64
    assert abs(np.var(draws) - exact_variance) < 0.02 * exact_variance
    # Chi-square over the cells expecting >= 5 draws, the two tails lumped into end cells.
    expected = pmf * draws.size
    inside = np.flatnonzero(expected >= 5)
    low, high = support[inside[0]], support[inside[-1]]
    observed = np.array([np.sum(draws <= low)] + [np.sum(draws == x) for x in support[inside[1:-1]]]
                        + [np.sum(draws >= high)])
    wanted = np.concatenate([[expected[: inside[0] + 1].sum()], expected[inside[1:-1]],
                             [expected[inside[-1]:].sum()]])
    assert observed.sum() == draws.size
    assert stats.chisquare(observed, wanted).pvalue > 1e-3


@pytest.mark.parametrize("gamma", [0.0, 0.4, 1.0, 2.5, 5.3])
def test_bernoulli_exp_frequency(gamma):
    coins = discrete_gaussian.bernoulli_exp(np.full(200_000, gamma), np.random.default_rng(1))
    p = math.exp(-gamma)
    assert abs(coins.mean() - p) < 5 * math.sqrt(p * (1 - p) / coins.size) + 1e-12


def test_sampler_is_deterministic_given_the_generator_and_zero_without_noise():
    first = discrete_gaussian.sample(3.3, 1000, np.random.default_rng(7))
    again = discrete_gaussian.sample(3.3, 1000, np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    assert not np.any(discrete_gaussian.sample(0.0, 10, np.random.default_rng(7)))


# The noise in the decoded result ------------------------------------------------------------
def test_decoded_noise_has_the_std_the_accountant_assumes():
    z, clip_norm, cohort, dimension = 1.3, 0.5, 10, 2048
    dp = ddp(noise_multiplier=z, clip_norm=clip_norm, dimension=dimension, bits=20,
             threshold=cohort)
    zeros = [[np.zeros(dimension)] for _ in range(cohort)]
    state, draws = dp.initialize(), []
    for _ in range(5):
        output = dp.next(state, zeros, np.ones(cohort))
        state = output.state
        draws.append(output.result[0])
    plan = dp.plan()
    # The accountant counts threshold noise shares of plan.sigma grid steps of plan.gamma each.
    assumed = plan.gamma * plan.sigma * math.sqrt(dp.min_survivors) / cohort
    assert assumed == pytest.approx(z * clip_norm / cohort)  # DP-FedAvg's central noise, / n
    assert abs(np.std(draws) - assumed) < 0.02 * assumed
    assert abs(np.mean(draws)) < 0.02 * assumed
    assert output.measurements["dp/noise_std"] == pytest.approx(assumed)


# Encoding without noise -------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, math.exp(-0.5)])
def test_without_noise_the_mean_is_the_clipped_mean_within_the_rounding_error(beta):
    cohort, clip_norm = 6, 2.0
    vectors = client_vectors(cohort, scale=1.0)  # norms around 2.6: some are clipped
    dp = ddp(noise_multiplier=0.0, clip_norm=clip_norm, bits=30, beta=beta, threshold=cohort,
             participation=Participation.fixed_size(60, cohort))
    output = run(dp, from_vectors(vectors))
    clipped = [to_vector(clip(value, clip_norm)[0]) for value in from_vectors(vectors)]
    exact = np.sum(clipped, axis=0) / cohort
    # Rounding moves each of the 8 (padded) rotated coordinates by less than one step gamma, per
    # client; the rotation back is orthogonal, so the sum's error has L2 norm
    # < cohort gamma sqrt(8).
    gamma = output.measurements["ddp/granularity"]
    assert np.linalg.norm(to_vector(output.result) - exact) < cohort * gamma * math.sqrt(8) / cohort
    num_clipped = sum(np.linalg.norm(v) > clip_norm for v in vectors)
    assert 0 < num_clipped < cohort and output.measurements["dp/num_clipped"] == num_clipped
    assert dp.epsilon(1) == math.inf and output.measurements["ddp/modular_overflows"] == 0


def test_granularity_fits_k_standard_deviations_of_the_sum_in_the_modulus():
    dp = ddp(noise_multiplier=0.8, clip_norm=0.3, bits=14, dimension=100)
    n, d, c, z = 10, 128, 0.3, 0.8
    k = NormalDist().inv_cdf(1 - 1e-4 / 2)
    gamma = dp.plan().gamma
    # 2**bits = 2 k sqrt(c^2 n^2 / d + (gamma^2 / 4 + sigma_c^2) n) / gamma, sigma_c = z c / sqrt(n)
    width = 2 * k * math.sqrt(c**2 * n**2 / d + (gamma**2 / 4 + (z * c) ** 2 / n) * n) / gamma
    assert width == pytest.approx(2**14, rel=1e-12)
    assert dp.plan().sigma == pytest.approx(z * c / math.sqrt(n) / gamma)


def test_conditional_rounding_keeps_every_client_within_the_inflated_norm():
    dp = ddp(noise_multiplier=0.0, beta=0.99, bits=20, threshold=10)
    values = from_vectors(client_vectors(10, scale=2.0))  # all clipped: norms at the bound
    state, plan = dp.initialize(), dp.plan()
    for position, value in enumerate(values):
        integers, _, _ = dp.client_integers(state, value, position)
        assert np.linalg.norm(integers) <= plan.inflated_norm / plan.gamma
    assert run(dp, values).measurements["ddp/rounding_retries"] > 0


# Secure aggregation: dropouts, aborts, wrap-around -------------------------------------------
def test_dropouts_the_result_is_the_exact_integer_sum_of_the_survivors_over_the_cohort():
    dp = ddp(dropout_fraction=0.3, threshold=6, bits=20, noise_multiplier=0.5)
    vectors = client_vectors(10)
    values = from_vectors(vectors)
    state = dp.initialize()
    output = dp.next(state, values, np.ones(10))
    survivors = phase_sets(10, dp.dropout, state["seed"], state["round"])[2]
    assert len(survivors) == 7 and output.measurements["secagg/num_survivors"] == 7
    integers = [dp.client_integers(state, value, i)[0] for i, value in enumerate(values)]
    total = np.sum([integers[i] for i in survivors], axis=0)  # exact, in int64
    plan = dp.plan()
    expected = unrotate(total * plan.gamma, dp.signs(state, 8), 7) / 10
    np.testing.assert_allclose(to_vector(output.result), expected, rtol=0, atol=1e-12)
    # Without noise it is the survivors' clipped values summed over the cohort size.
    quiet = attrs.evolve(dp, noise_multiplier=0.0)
    result = to_vector(quiet.next(state, values, np.ones(10)).result)
    survivors_sum = np.sum([to_vector(clip(values[i], 1.0)[0]) for i in survivors], axis=0)
    gamma = quiet.plan().gamma
    assert np.linalg.norm(result - survivors_sum / 10) < 7 * gamma * math.sqrt(8) / 10


def test_a_round_below_the_threshold_aborts_with_zeros():
    dp = ddp(dropout_fraction=0.5, threshold=8)
    output = run(dp, from_vectors(client_vectors(10)))
    assert not np.any(to_vector(output.result))
    assert output.measurements["secagg/aborted"] == 1 and output.measurements["dp/noise_std"] == 0
    weights = np.array([1.0] * 3 + [0.0] * 7)  # three participants cannot reach threshold 8
    few = run(dp, from_vectors(client_vectors(10)), weights)
    assert few.measurements["secagg/aborted"] == 1 and few.measurements["dp/num_clients"] == 3
    assert few.state["round"] == 1


def test_modular_overflows_are_counted_from_the_true_sum():
    loose = ddp(modclip_prob=0.5, bits=8, threshold=10, dimension=64, noise_multiplier=0.3)
    values = [[v] for v in client_vectors(10, dimension=64, scale=1.0)]
    state = loose.initialize()
    output = loose.next(state, values, np.ones(10))
    true_sum = np.sum([loose.client_integers(state, v, i)[0] for i, v in enumerate(values)], axis=0)
    outside = np.sum((true_sum < -(2**7)) | (true_sum >= 2**7))
    assert outside > 0 and output.measurements["ddp/modular_overflows"] == outside
    tight = attrs.evolve(loose, modclip_prob=1e-6, bits=16)
    assert tight.next(state, values, np.ones(10)).measurements["ddp/modular_overflows"] == 0


def test_rounds_are_deterministic_given_seed_and_round():
    dp = ddp()
    values = from_vectors(client_vectors(10))
    first, again = run(dp, values), run(dp, values)
    second = run(dp, values, state=first.state)
    other_seed = run(attrs.evolve(dp, seed=4), values)
    np.testing.assert_array_equal(to_vector(first.result), to_vector(again.result))
    assert first.measurements == again.measurements
    assert not np.array_equal(to_vector(first.result), to_vector(second.result))
    assert not np.array_equal(to_vector(first.result), to_vector(other_seed.result))


# Accounting -------------------------------------------------------------------------------
def hand_epsilon(c, z, bits, beta, d, n, t, largest, factor, rounds, delta, modclip=1e-4):
    """Kairouz et al. 2021: granularity (Section 4), inflated norm and Renyi bound (Theorem 1),
    composed over rounds; epsilon by eps = rdp + log(1 - 1/a) - log(delta a) / (a - 1)."""
    k = NormalDist().inv_cdf(1 - modclip / 2)
    sigma_c = z * c / math.sqrt(n)  # per-client std, in the units of the values
    gamma = (2 * k * math.sqrt(c**2 * n**2 / d + n * sigma_c**2)
             / math.sqrt(2 ** (2 * bits) - n * k**2))
    norm_sq = (c + gamma * math.sqrt(d)) ** 2
    if beta > 0:
        conditional = (c**2 + gamma**2 * d / 4
                       + math.sqrt(2 * math.log(1 / beta)) * gamma * (c + gamma * math.sqrt(d) / 2))
        norm_sq = min(norm_sq, conditional)
    s = factor * math.sqrt(norm_sq) / (math.sqrt(t) * sigma_c)
    sigma = sigma_c / gamma  # in grid steps
    tau = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * j / (j + 1)) for j in range(1, largest))
    best = math.inf
    for a in RDP_ORDERS:
        rdp = rounds * min(a * s**2 / 2 + tau * d, a / 2 * (s + tau * math.sqrt(d)) ** 2)
        best = min(best, rdp + math.log(1 - 1 / a) - math.log(delta * a) / (a - 1))
    return best, tau


@pytest.mark.parametrize(
    "bits, beta, participation, factor, largest",
    [
        (16, math.exp(-0.5), FIXED, 2.0, 10),
        (6, 0.0, FIXED, 2.0, 10),  # coarse grid: the tau term matters
        (7, math.exp(-0.5), Participation.poisson(500, 0.02), 1.0, 500),
    ],
)
def test_epsilon_matches_the_paper_by_hand(bits, beta, participation, factor, largest):
    dp = ddp(bits=bits, beta=beta, participation=participation)
    expected, tau = hand_epsilon(1.0, 1.0, bits, beta, 8, 10, 8, largest, factor, 5, 1e-5)
    assert dp.rdp_epsilon(5) == pytest.approx(expected, rel=1e-9)
    if bits == 6:
        assert tau * 8 > 0.1  # the case exercises the tau terms
    # The Gaussian event given to the accountant is an upper bound of the same curve.
    assert dp.epsilon(5) >= dp.rdp_epsilon(5) - 1e-9
    assert dp.rdp_epsilon(0) == 0 and dp.epsilon(0) == 0


def test_report_and_configuration_errors():
    dp = ddp()
    report = mechanism.report(dp, run(dp, from_vectors(client_vectors(10))).state)
    assert report["rounds"] == 1 and report["mechanism"] == "DistributedDP"
    assert report["threshold"] == 8 and report["padded_dimension"] == 8
    with pytest.raises(AggregatorConfigError, match="accountant='rdp'"):
        ddp(accountant="pld")
    with pytest.raises(AggregatorConfigError, match="threshold=11"):
        ddp(threshold=11)
    with pytest.raises(AggregatorConfigError, match="raise bits"):
        ddp(bits=3)
    with pytest.raises(AggregatorConfigError, match="set dimension=7"):
        run(ddp(dimension=9), from_vectors(client_vectors(10)))
    with pytest.raises(AggregatorConfigError, match="dimension="):
        run(ddp(dimension=None), from_vectors(client_vectors(10)))
    assert ddp(threshold=None).min_survivors == 7  # ceil(2/3 * 10)
