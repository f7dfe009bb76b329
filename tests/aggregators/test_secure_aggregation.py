"""Secure aggregation (Bonawitz et al. 2017), simulated: the protocol core
``secure_sum`` (masks, dropouts per phase, threshold, bytes) and the rule."""

import numpy as np
import pytest
import scipy.stats

from fedsim.aggregators import (
    AggregationError,
    AggregatorConfigError,
    SecureAggregation,
    build_aggregator,
)
from fedsim.aggregators.clipping import clip
from fedsim.aggregators.secure_aggregation import (
    ModulusOverflowError,
    PhaseDropout,
    SecureSumOutcome,
    encode,
    secure_sum,
)
from fedsim.aggregators.secure_sum import PHASES, masked_inputs, phase_sets
from tests.aggregators.helpers import from_vectors, run, to_vector

BITS, MODULUS_BITS = 12, 32


def level_cohort(n, size=50, seed=0, bits=BITS):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 2**bits, size, dtype=np.uint64) for _ in range(n)]


def plain_sum(vectors, positions, modulus_bits=MODULUS_BITS):
    """Exact integer sum (Python ints) of the chosen inputs, modulo the modulus."""
    total = sum(vectors[i].astype(object) for i in positions)
    return [int(x) % 2**modulus_bits for x in total]


def run_secure_sum(vectors, threshold, dropout=None, seed=9, round_num=4, **kwargs):
    return secure_sum(
        vectors,
        modulus_bits=kwargs.get("modulus_bits", MODULUS_BITS),
        threshold=threshold,
        dropout=dropout or PhaseDropout(),
        seed=seed,
        round_num=round_num,
    )


DROPOUTS = {phase: PhaseDropout(**{phase: 0.2}) for phase in PHASES}
DROPOUTS["all_phases"] = PhaseDropout(0.1, 0.2, 0.2, 0.3)


@pytest.mark.parametrize("name", sorted(DROPOUTS))
@pytest.mark.parametrize("modulus_bits", [16, 32, 64])
def test_unmasked_sum_is_exactly_the_survivors_sum(name, modulus_bits):
    vectors = level_cohort(12, bits=8)
    dropout = DROPOUTS[name]
    outcome = run_secure_sum(vectors, 6, dropout, modulus_bits=modulus_bits)
    u1, u2, u3, u5 = phase_sets(12, dropout, seed=9, round_num=4)
    assert outcome.survivors == u3  # unmasking dropouts already sent their input: kept
    assert outcome.total.dtype == np.uint64
    assert outcome.total.tolist() == plain_sum(vectors, u3, modulus_bits)
    m = outcome.measurements
    assert m["secagg/aborted"] == 0 and m["secagg/num_survivors"] == len(u3)
    sizes = [12, len(u1), len(u2), len(u3), len(u5)]
    for phase, entering, left in zip(PHASES, sizes, sizes[1:]):
        fraction = getattr(dropout, phase)
        assert m[f"secagg/dropped_at_{phase}"] == entering - left == int(fraction * entering)
    assert m["secagg/num_dropped"] == 12 - len(u5)


def test_no_masked_input_equals_its_input():
    vectors = level_cohort(6) + [np.zeros(50, dtype=np.uint64)]
    _, u2, u3, _ = phase_sets(7, PhaseDropout(share_keys=0.2, masked_input=0.2), 1, 0)
    assert len(u2) < 7 and len(u3) < len(u2)  # pair masks with a dropped client still apply
    masked = masked_inputs(
        {u: vectors[u] for u in u3}, u2, modulus_bits=MODULUS_BITS, seed=1, round_num=0
    )
    for u in u3:
        assert masked[u].dtype == np.uint64 and int(masked[u].max()) < 2**MODULUS_BITS
        assert np.mean(masked[u] == vectors[u]) < 0.01


def test_a_masked_input_is_uniform_and_independent_of_its_update():
    size = 40_000
    update = np.linspace(-1, 1, size)
    encoded = [encode(update, 1.0, BITS, np.random.default_rng(0))] + level_cohort(3, size)
    masked = masked_inputs(
        dict(enumerate(encoded)), range(4), modulus_bits=MODULUS_BITS, seed=1, round_num=0
    )[0]
    masked_bins = (masked >> np.uint64(MODULUS_BITS - 4)).astype(int)  # 16 equal bins
    _, uniform_p = scipy.stats.chisquare(np.bincount(masked_bins, minlength=16))
    assert uniform_p > 1e-3
    update_bins = (encoded[0] >> np.uint64(BITS - 2)).astype(int)  # 4 bins of the update
    table = np.zeros((4, 16))
    np.add.at(table, (update_bins, masked_bins), 1)
    assert scipy.stats.chi2_contingency(table).pvalue > 1e-3


@pytest.mark.parametrize("phase_number, phase", list(enumerate(PHASES, start=1)))
def test_fewer_than_threshold_in_any_phase_aborts(phase_number, phase):
    # 10 clients, t = 8: dropping 3 in one phase leaves 7 < t.
    outcome = run_secure_sum(level_cohort(10), 8, PhaseDropout(**{phase: 0.3}))
    m = outcome.measurements
    assert outcome.total is None and outcome.survivors == []
    assert m["secagg/aborted"] == 1 and m["secagg/abort_phase"] == phase_number
    assert m[f"secagg/dropped_at_{phase}"] == 3 and m["secagg/num_survivors"] == 0


def test_unmasking_dropouts_down_to_the_threshold_stay_in_the_sum():
    vectors = level_cohort(10)
    outcome = run_secure_sum(vectors, 8, PhaseDropout(unmasking=0.2))  # 8 >= t remain
    assert outcome.survivors == list(range(10))
    assert outcome.total.tolist() == plain_sum(vectors, range(10))
    assert outcome.measurements["secagg/dropped_at_unmasking"] == 2


@pytest.mark.parametrize("phase_number, phase", list(enumerate(PHASES, start=1)))
def test_the_rule_returns_zeros_when_the_round_aborts(phase_number, phase):
    # 9 clients, t = ceil(0.9 * 9) = 9: any dropout aborts.
    secagg = SecureAggregation(clip_norm=1.0, threshold=0.9, **{_rule_parameter(phase): 0.2})
    output = run(secagg, from_vectors(np.ones((9, 7))))
    assert output.measurements["secagg/aborted"] == 1
    assert output.measurements["secagg/abort_phase"] == phase_number
    np.testing.assert_array_equal(to_vector(output.result), np.zeros(7))
    assert output.state == {"seed": 0, "round": 1}


def _rule_parameter(phase):
    return "dropout_fraction" if phase == "masked_input" else f"{phase}_dropout"


@pytest.mark.parametrize("threshold", [1, 7])
def test_threshold_must_be_between_two_and_the_cohort(threshold):
    with pytest.raises(AggregationError, match=f"threshold={threshold} must be .* \\[2, 6\\]"):
        run_secure_sum(level_cohort(6), threshold)


def test_an_input_outside_the_modulus_is_an_error():
    vectors = level_cohort(3, bits=20)
    with pytest.raises(AggregationError, match="raise modulus_bits"):
        run_secure_sum(vectors, 2, modulus_bits=16)


def test_bytes_per_client_match_the_hand_count():
    # 4 clients, t = 3, 5 coordinates of 32 bits, nobody drops. A client sends:
    # 2 keys x 32 + 3 ciphertexts x (2 shares x 32 + 28 AES-GCM) + 5 x 32 / 8 + 4 shares x 32
    outcome = run_secure_sum(level_cohort(4, size=5), 3)
    assert outcome.measurements["secagg/input_bytes_per_client"] == 20
    assert outcome.measurements["secagg/bytes_per_client"] == 64 + 276 + 20 + 128 == 488
    assert outcome.measurements["secagg/bytes_total"] == 4 * 488
    # 5 clients, one drops in share keys: it sent only its keys and the others
    # unmask with 4 shares each: 64 + 4 x 92 + 20 + 4 x 32 = 580 per full client.
    dropped = run_secure_sum(level_cohort(5, size=5), 3, PhaseDropout(share_keys=0.2))
    assert dropped.measurements["secagg/bytes_per_client"] == 580
    assert dropped.measurements["secagg/bytes_total"] == 5 * 64 + 4 * (580 - 64)


def test_same_seed_and_round_give_the_same_outcome():
    vectors, dropout = level_cohort(10), PhaseDropout(0.1, 0.1, 0.2, 0.1)
    first, again = (run_secure_sum(vectors, 5, dropout, seed=3, round_num=7) for _ in range(2))
    assert isinstance(first, SecureSumOutcome)
    assert first.total.tolist() == again.total.tolist()
    assert first.survivors == again.survivors and first.measurements == again.measurements
    other_round = run_secure_sum(vectors, 5, dropout, seed=3, round_num=8)
    assert other_round.total.tolist() == plain_sum(vectors, other_round.survivors)
    u2 = phase_sets(10, PhaseDropout(), 3, 7)[1]
    masks = [
        masked_inputs({0: vectors[0]}, u2, modulus_bits=MODULUS_BITS, seed=3, round_num=r)[0]
        for r in (7, 7, 8)
    ]
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])


def test_the_rule_is_deterministic_given_its_state():
    vectors = np.random.default_rng(4).uniform(-1, 1, size=(8, 7))
    secagg = SecureAggregation(clip_norm=1.0, dropout_fraction=0.25, seed=2)
    state = {"seed": 2, "round": 5}
    first, again = (run(secagg, from_vectors(vectors), state=state) for _ in range(2))
    np.testing.assert_array_equal(to_vector(first.result), to_vector(again.result))
    assert first.measurements == again.measurements and first.state == {"seed": 2, "round": 6}


@pytest.mark.parametrize("dropout_fraction", [0.0, 0.3])
def test_result_is_the_mean_of_the_survivors_within_quantization_error(dropout_fraction):
    vectors = np.random.default_rng(2).uniform(-0.3, 0.3, size=(10, 7))
    secagg = SecureAggregation(
        clip_norm=1.0, quantization_bits=16, dropout_fraction=dropout_fraction, seed=5
    )
    output = run(secagg, from_vectors(vectors))
    survivors = phase_sets(10, secagg.dropout, 5, 0)[2]
    step = 2.0 / (2**16 - 1)  # each level sum is off by < 1 level per client: mean < 1 step
    np.testing.assert_allclose(to_vector(output.result), vectors[survivors].mean(axis=0), atol=step)
    assert output.measurements["secagg/num_dropped"] == 10 - len(survivors)
    assert output.measurements["secagg/dropped_at_masked_input"] == int(10 * dropout_fraction)
    assert output.measurements["secagg/input_bytes_per_client"] == 32 * 7 / 8


@pytest.mark.parametrize("dropout", [{}, {"share_keys_dropout": 0.2, "dropout_fraction": 0.2}])
def test_weighted_mean_matches_numpy_within_the_derived_bound(dropout):
    rng = np.random.default_rng(6)
    vectors = rng.normal(0, 1, size=(12, 7))  # norms about 2.6: most get clipped
    weights = rng.uniform(1, 50, size=12)
    clip_norm, max_weight, bits = 1.0, 50.0, 16
    secagg = SecureAggregation(
        clip_norm=clip_norm,
        quantization_bits=bits,
        weighted=True,
        max_update_weight=max_weight,
        seed=3,
        **dropout,
    )
    output = run(secagg, from_vectors(vectors), weights)
    survivors = phase_sets(12, secagg.dropout, 3, 0)[2]
    clipped = np.array([to_vector(clip(from_vectors(v[None])[0], clip_norm)[0]) for v in vectors])
    expected = np.average(clipped[survivors], axis=0, weights=weights[survivors])
    # Per survivor, w * x is off by < q = 2 W C / L and w by < r = W / L, so the
    # ratio (N + E) / (D + F) is off by < k (q + C r) / (D - k r) per coordinate.
    levels, k, total = 2**bits - 1, len(survivors), weights[survivors].sum()
    q, r = 2 * max_weight * clip_norm / levels, max_weight / levels
    bound = k * (q + clip_norm * r) / (total - k * r)
    np.testing.assert_allclose(to_vector(output.result), expected, rtol=0, atol=bound)
    assert abs(output.measurements["secagg/total_weight"] - total) < k * r
    assert output.measurements["secagg/num_clipped"] > 0
    assert output.measurements["secagg/input_bytes_per_client"] == 32 * 8 / 8  # + weight


def test_a_weight_above_the_maximum_is_capped_and_counted():
    vectors = np.random.default_rng(7).uniform(-0.2, 0.2, size=(6, 7))
    weights = np.array([1.0, 2.0, 3.0, 4.0, 40.0, 90.0])
    secagg = SecureAggregation(clip_norm=1.0, weighted=True, max_update_weight=4.0)
    output = run(secagg, from_vectors(vectors), weights)
    expected = np.average(vectors, axis=0, weights=np.minimum(weights, 4.0))
    np.testing.assert_allclose(to_vector(output.result), expected, atol=1e-3)
    assert output.measurements["secagg/num_weights_capped"] == 2


def test_the_default_threshold_is_two_thirds_of_the_participants():
    weights = [5.0] * 9 + [0.0]  # unweighted: any positive weight counts once, none is capped
    output = run(SecureAggregation(clip_norm=1.0), from_vectors(np.ones((10, 7))), weights)
    assert output.measurements["secagg/threshold"] == 6  # ceil(2/3 x 9 participants)
    assert output.measurements["secagg/total_weight"] == 9
    assert output.measurements["secagg/num_weights_capped"] == 0


def test_too_many_clients_for_the_modulus_is_an_error():
    secagg = SecureAggregation(clip_norm=1.0, quantization_bits=8, modulus_bits=10)
    with pytest.raises(ModulusOverflowError, match="raise modulus_bits"):
        run(secagg, from_vectors(np.zeros((5, 7))))


@pytest.mark.parametrize("weights", [[1.0], [0.0, 0.0]])
def test_fewer_than_two_participants_aborts_the_round(weights):
    output = run(
        SecureAggregation(clip_norm=1.0), from_vectors(np.ones((len(weights), 7))), weights
    )
    assert output.measurements["secagg/aborted"] == 1
    assert output.measurements["secagg/num_survivors"] == 0
    assert output.measurements["secagg/bytes_total"] == 0  # the protocol never starts
    np.testing.assert_array_equal(to_vector(output.result), np.zeros(7))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"weighted": True}, "needs max_update_weight"),
        ({"max_update_weight": 5.0}, "only applies with weighted=True"),
        ({"threshold": 0.0}, "threshold=0.0 must be in \\(0.0, 1.0\\]"),
        ({"share_keys_dropout": 1.0}, "share_keys_dropout=1.0 must be in"),
        ({"weighted": "yes", "max_update_weight": 1.0}, "weighted='yes' must be true or false"),
    ],
)
def test_bad_configuration_names_the_parameter(params, message):
    with pytest.raises(AggregatorConfigError, match=message):
        SecureAggregation(clip_norm=1.0, **params)


def test_factory_builds_the_rule_with_the_new_parameters():
    rule = build_aggregator(
        [
            {
                "name": "secure_aggregation",
                "clip_norm": 1.0,
                "threshold": 0.75,
                "unmasking_dropout": 0.1,
                "weighted": True,
                "max_update_weight": 10.0,
            }
        ]
    )
    assert rule.dropout == PhaseDropout(unmasking=0.1) and rule.weighted
