"""DP-FTRL (Kairouz et al. 2021): tree noise, residuals, restarts, accounting and refusals.

Expected values come from NumPy references, from the dyadic decomposition
written out again below, and from the paper's closed-form RDP of tree
aggregation, never from the rule's own helpers.
"""

import json
import math

import attrs
import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from scipy import optimize, stats

from fedsim.aggregators.clipping import clip
from fedsim.aggregators.dp_ftrl import DPFTRL
from fedsim.privacy import mechanism
from fedsim.privacy.participation import Participation, ParticipationError
from tests.aggregators.helpers import from_vectors, to_vector

# Round robin over 1000 clients, 10 a round: every client once in any 100 consecutive rounds.
ROUND_ROBIN = Participation.none(1000, 10, epoch_rounds=100)
ORDERS = np.array([1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))  # dp_accounting's defaults


def dyadic_prefix(t):
    """Intervals (first, last) of the binary-tree decomposition of rounds [1..t], by greedy largest blocks."""
    intervals, start = [], 1
    while start <= t:
        size = 1
        while (start - 1) % (2 * size) == 0 and start - 1 + 2 * size <= t:
            size *= 2
        intervals.append((start, start + size - 1))
        start += size
    return intervals


def run_rounds(rule, rounds, values, state=None):
    state = rule.initialize() if state is None else state
    outputs = []
    for _ in range(rounds):
        output = rule.next(state, values, np.ones(len(values)))
        outputs.append(output)
        state = output.state
    return outputs, state


def prefix_noises(z, clip_norm, rounds, dimension, restart_every=None, seed=3):
    """m * (sum of the first t results) for t = 1..rounds, with all-zero client values: the model's noise."""
    rule = DPFTRL(clip_norm=clip_norm, noise_multiplier=z, restart_every=restart_every, seed=seed,
                  participation=ROUND_ROBIN)
    outputs, _ = run_rounds(rule, rounds, [[np.zeros(dimension)]] * 10)
    return np.cumsum([o.result[0] * 10 for o in outputs], axis=0)


# The noise ------------------------------------------------------------------------
def test_one_tree_node_has_std_z_times_clip():
    z, clip_norm = 1.3, 0.7
    # Round 1 of a tree releases exactly one node (the first leaf): 60000 draws of it.
    first = prefix_noises(z, clip_norm, 1, 60000)[0]
    assert np.std(first) == pytest.approx(z * clip_norm, rel=0.02)
    assert abs(np.mean(first)) < 0.02 * z * clip_norm


def test_results_telescope_to_one_prefix_noise_of_the_predicted_size():
    z, clip_norm, rounds, dimension = 1.1, 0.5, 15, 40000
    noise = prefix_noises(z, clip_norm, rounds, dimension)
    decompositions = [set(dyadic_prefix(t)) for t in range(1, rounds + 1)]
    for t, nodes in enumerate(decompositions, start=1):
        # popcount(t) independent nodes of std z*C each; 40000 draws give ~0.4% sampling error.
        assert np.std(noise[t - 1]) == pytest.approx(z * clip_norm * math.sqrt(len(nodes)), rel=0.02)
    # Two prefixes share exactly the nodes of their decompositions in common (e.g. [1..4] in 5 and 6).
    correlation = np.corrcoef(noise)
    for s in range(rounds):
        for t in range(rounds):
            shared = len(decompositions[s] & decompositions[t])
            expected = shared / math.sqrt(len(decompositions[s]) * len(decompositions[t]))
            assert correlation[s, t] == pytest.approx(expected, abs=0.03), (s + 1, t + 1)


def test_data_and_noise_telescope_separately():
    vectors = np.random.default_rng(1).normal(scale=2.0, size=(10, 7))
    values = from_vectors(vectors)
    rule = DPFTRL(clip_norm=1.5, noise_multiplier=0.8, seed=3, participation=ROUND_ROBIN)
    outputs, _ = run_rounds(rule, 6, values)
    clipped = sum(to_vector(clip(v, 1.5)[0]) for v in values)
    noise = prefix_noises(0.8, 1.5, 6, 7)
    for t in range(1, 7):
        released = 10 * sum(to_vector(o.result) for o in outputs[:t])
        np.testing.assert_allclose(released, t * clipped + noise[t - 1], rtol=1e-12, atol=1e-12)


def test_without_noise_each_result_is_the_clipped_unweighted_sum_over_m():
    rng = np.random.default_rng(2)
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=0.0, participation=ROUND_ROBIN)
    state = rule.initialize()
    for _ in range(5):
        vectors = rng.normal(scale=0.8, size=(7, 7))
        weights = np.array([3.0, 0.0, 1.0, 2.0, 5.0, 0.0, 1.0])  # weights only select, never scale
        output = rule.next(state, from_vectors(vectors), weights)
        state = output.state
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        reference = (vectors * np.minimum(1.0, 1.0 / norms))[weights > 0].sum(axis=0) / 10
        np.testing.assert_allclose(to_vector(output.result), reference, rtol=1e-12)
        assert output.measurements["dp/num_clients"] == 5


# Restarts ---------------------------------------------------------------------------
def test_a_restart_keeps_the_finished_trees_noise_in_the_model():
    z, clip_norm = 1.0, 1.0
    noise = prefix_noises(z, clip_norm, 8, 40000, restart_every=4)
    # After round 4 the model holds node [1..4] of tree 0; rounds 5..8 add tree 1's prefixes on top.
    for t, nodes in {4: 1, 5: 2, 6: 2, 7: 3, 8: 2}.items():
        assert np.std(noise[t - 1]) == pytest.approx(z * clip_norm * math.sqrt(nodes), rel=0.02)
    tree_one = noise[4:] - noise[3]
    assert abs(np.corrcoef(noise[3], tree_one[0])[0, 1]) < 0.03  # a fresh tree, fresh noise
    assert np.corrcoef(noise[3], noise[7])[0, 1] == pytest.approx(1 / math.sqrt(2), abs=0.03)
    # Tree 1 is a tree like tree 0 (its round 1 is a leaf, its round 4 the node [1..4]).
    assert np.std(tree_one[3]) == pytest.approx(z * clip_norm, rel=0.02)


def test_results_resume_bit_identically_from_a_saved_state():
    values = from_vectors(np.random.default_rng(4).normal(size=(10, 7)))
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=1.2, restart_every=5, seed=9, participation=ROUND_ROBIN)
    straight, _ = run_rounds(rule, 12, values)
    _, saved = run_rounds(rule, 7, values)
    saved = json.loads(json.dumps(saved))  # what a checkpoint keeps: plain numbers
    rebuilt = DPFTRL(clip_norm=1.0, noise_multiplier=1.2, restart_every=5, seed=9, participation=ROUND_ROBIN)
    resumed, _ = run_rounds(rebuilt, 5, values, state=saved)
    for a, b in zip(straight[7:], resumed):
        for x, y in zip(a.result, b.result):
            np.testing.assert_array_equal(x, y)
        assert a.state == b.state and a.measurements == b.measurements


# Accounting ---------------------------------------------------------------------------
def closed_form_epsilon(z, steps, delta, improved=True):
    """The paper's tree RDP, alpha * ceil(log2(T + 1)) / (2 z^2), converted at dp_accounting's orders."""
    curve = ORDERS * math.ceil(math.log2(steps + 1)) / (2 * z**2)
    if improved:  # Canonne, Kamath, Steinke 2020, Prop. 12 (dp_accounting's conversion)
        return float(np.min(curve + np.log1p(-1 / ORDERS) - np.log(delta * ORDERS) / (ORDERS - 1)))
    return float(np.min(curve + math.log(1 / delta) / (ORDERS - 1)))  # Mironov 2017, Prop. 3


def exact_gaussian_epsilon(mu, delta):
    """Balle & Wang 2018: the exact epsilon of a Gaussian mechanism of sensitivity/std mu, a lower bound."""
    def excess(eps):
        return stats.norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu) - delta
    return optimize.brentq(excess, 0.0, 100.0)


def test_one_epoch_epsilon_is_the_closed_form_tree_bound():
    z, steps, delta = 1.1, 100, 1e-5
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=z, target_delta=delta, participation=ROUND_ROBIN)
    outputs, _ = run_rounds(rule, steps, [[np.zeros(2)]])
    reported = outputs[-1].measurements["dp/epsilon"]
    # Same RDP curve, same conversion, same orders: equal up to rounding.
    assert reported == pytest.approx(closed_form_epsilon(z, steps, delta), rel=1e-9)
    # Sandwich: no valid bound beats the exact Gaussian of sensitivity sqrt(7) C (the deepest leaf of
    # a 100-leaf tree is in 7 nodes), and the improved conversion beats Mironov's for every order.
    assert exact_gaussian_epsilon(math.sqrt(7) / z, delta) < reported < closed_form_epsilon(z, steps, delta, False)


def test_the_rdp_matches_dp_accountings_tree_event_across_restarts():
    z, delta = 0.9, 1e-6

    def tree_events(step_counts_per_epoch):
        accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
        accountant.compose(dp_accounting.ComposedDpEvent(
            [dp_accounting.SingleEpochTreeAggregationDpEvent(z, steps) for steps in step_counts_per_epoch]))
        return accountant.get_epsilon(delta)

    # 250 rounds, one tree per 100-round epoch: every client in each of the 3 trees, so they compose.
    one_tree = DPFTRL(clip_norm=1.0, noise_multiplier=z, target_delta=delta, participation=ROUND_ROBIN)
    assert one_tree.epsilon(250) == pytest.approx(tree_events([100, 100, 50]), rel=1e-9)
    # Trees of 25 rounds: four fit in one epoch, where a client is in one of them only.
    quarter = attrs.evolve(one_tree, restart_every=25)
    assert quarter.epsilon(250) == pytest.approx(tree_events([[25] * 4, [25] * 4, [25, 25]]), rel=1e-9)
    # Trees of 40 rounds: two fit in an epoch (80 rounds); the third starts a new group.
    forty = attrs.evolve(one_tree, restart_every=40)
    assert forty.epsilon(250) == pytest.approx(tree_events([[40, 40], [40, 40], [40, 40], [10]]), rel=1e-9)
    assert quarter.epsilon(250) < one_tree.epsilon(250)


def test_stackoverflow_figures_of_the_paper():
    # StackOverflow in Kairouz et al. 2021: 342,477 clients, 100 a round, 1600 rounds (one tree), delta = 1e-6.
    # dp_accounting's rdp_privacy_accountant_test.test_compute_eps_tree records z = 1.13 -> eps 19.74 and
    # z = 8.83 -> eps 2.04 for it (Mironov's conversion); the closed form gives them, and dp_accounting's
    # improved conversion, which the rule reports, is below them.
    participation = Participation.none(342477, 100, epoch_rounds=342477 // 100)
    for z, published in [(1.13, 19.74), (8.83, 2.04)]:
        assert round(closed_form_epsilon(z, 1600, 1e-6, improved=False), 2) == published
        rule = DPFTRL(clip_norm=1.0, noise_multiplier=z, target_delta=1e-6, participation=participation)
        assert rule.epsilon(1600) == pytest.approx(closed_form_epsilon(z, 1600, 1e-6), rel=1e-9)
        assert rule.epsilon(1600) < published


def test_pld_gives_the_exact_gaussian_epsilon():
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=2.0, accountant="pld", participation=ROUND_ROBIN)
    # 100 rounds: one tree, deepest leaf in 7 nodes; PLD discretisation error is well under 1%.
    assert rule.epsilon(100) == pytest.approx(exact_gaussian_epsilon(math.sqrt(7) / 2.0, 1e-5), rel=0.01)
    assert rule.epsilon(100) < attrs.evolve(rule, accountant="rdp").epsilon(100)


def test_no_rounds_cost_nothing_and_no_noise_is_not_private():
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=0.0, participation=ROUND_ROBIN)
    assert rule.epsilon(0) == 0.0 and rule.epsilon(3) == math.inf


# Refusals ---------------------------------------------------------------------------------
def test_a_tree_longer_than_the_epoch_is_refused():
    with pytest.raises(ParticipationError, match=r"restart_every=101 .*round_robin.*restart_every <= N // m"):
        DPFTRL(clip_norm=1.0, noise_multiplier=1.0, restart_every=101, participation=ROUND_ROBIN)
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=1.0, restart_every=4)
    with pytest.raises(ParticipationError, match="restart_every=4"):  # also when the run binds it
        attrs.evolve(rule, participation=Participation.poisson(1000, 0.01))


def test_fixed_size_cohorts_are_refused():
    with pytest.raises(ParticipationError, match="fixed-size cohorts.*round_robin"):
        DPFTRL(clip_norm=1.0, noise_multiplier=1.0, participation=Participation.fixed_size(1000, 10))


def test_without_participation_it_says_how_to_bind_one():
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=1.0)
    with pytest.raises(ParticipationError, match="sampler.participation"):
        rule.next(rule.initialize(), [[np.zeros(2)]], np.ones(1))


def test_the_round_robin_sampler_states_the_epoch_the_rule_needs():
    from fedsim.simulation.sampling import RoundRobinSampler

    participation = RoundRobinSampler(cohort_size=10).participation(1005)
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=1.0, participation=participation)
    assert rule.tree_rounds == 100  # 1005 // 10: the wrap-around round must not share a tree with its client


def test_the_run_binds_it_and_reports_its_privacy():
    rule = mechanism.bind(DPFTRL(clip_norm=1.0, noise_multiplier=1.0), ROUND_ROBIN)
    mechanism.check_run(rule, ROUND_ROBIN)
    _, state = run_rounds(rule, 3, [[np.zeros(2)]])
    report = mechanism.report(rule, state)
    assert report["rounds"] == 3 and report["restart_every"] == 100
    assert report["relation"] == "add_or_remove_one" and report["epsilon"] == rule.epsilon(3)


def test_under_poisson_sampling_each_round_is_its_own_tree_without_amplification():
    rule = DPFTRL(clip_norm=1.0, noise_multiplier=1.5, participation=Participation.poisson(1000, 0.01))
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(1.5), 5)
    assert rule.tree_rounds == 1
    assert rule.epsilon(5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
