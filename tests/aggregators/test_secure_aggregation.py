"""Simulated secure aggregation: masks cancel exactly and hide each input."""

import numpy as np
import pytest
import scipy.stats

from fedsim.aggregators import AggregationError, SecureAggregation
from fedsim.aggregators.secure_aggregation import choose_dropouts, encode, mask_inputs, unmask_sum
from tests.aggregators.helpers import from_vectors, run, to_vector

BITS, MODULUS_BITS = 12, 32


def encoded_cohort(n, size=50, seed=0):
    rng = np.random.default_rng(seed)
    return [encode(rng.uniform(-1, 1, size), 1.0, BITS, rng) for _ in range(n)]


@pytest.mark.parametrize("dropped", [[], [1], [0, 3, 5]])
def test_unmasked_sum_equals_the_sum_of_quantized_updates(dropped):
    encoded = encoded_cohort(6)
    masked = mask_inputs(encoded, seed=9, round_num=4, modulus_bits=MODULUS_BITS)
    survivors = {i: masked[i] for i in range(6) if i not in dropped}
    total = unmask_sum(survivors, dropped, seed=9, round_num=4, modulus_bits=MODULUS_BITS)
    expected = sum(encoded[i].astype(object) for i in survivors)  # exact integers
    assert total.dtype == np.uint64
    assert total.tolist() == [int(x) % 2**MODULUS_BITS for x in expected]
    assert all(not np.array_equal(masked[i], encoded[i]) for i in survivors)


def test_a_masked_input_is_uniform_and_independent_of_its_update():
    size = 40_000
    update = np.linspace(-1, 1, size)
    encoded = [encode(update, 1.0, BITS, np.random.default_rng(0))] + encoded_cohort(3, size)
    masked = mask_inputs(encoded, seed=1, round_num=0, modulus_bits=MODULUS_BITS)[0]
    masked_bins = (masked >> np.uint64(MODULUS_BITS - 4)).astype(int)  # 16 equal bins
    _, uniform_p = scipy.stats.chisquare(np.bincount(masked_bins, minlength=16))
    assert uniform_p > 1e-3
    update_bins = (encoded[0] >> np.uint64(BITS - 2)).astype(int)  # 4 bins of the update
    table = np.zeros((4, 16))
    np.add.at(table, (update_bins, masked_bins), 1)
    assert scipy.stats.chi2_contingency(table).pvalue > 1e-3


@pytest.mark.parametrize("dropout_fraction", [0.0, 0.3])
def test_result_is_the_mean_of_the_survivors_within_quantization_error(dropout_fraction):
    vectors = np.random.default_rng(2).uniform(-0.3, 0.3, size=(10, 7))
    secagg = SecureAggregation(
        clip_norm=1.0, quantization_bits=16, dropout_fraction=dropout_fraction, seed=5
    )
    output = run(secagg, from_vectors(vectors))
    dropped = choose_dropouts(5, 0, 10, dropout_fraction)
    survivors = [i for i in range(10) if i not in dropped]
    step = 2.0 / (2**16 - 1)
    np.testing.assert_allclose(to_vector(output.result), vectors[survivors].mean(axis=0), atol=step)
    assert output.measurements["secagg/num_dropped"] == len(dropped) == int(10 * dropout_fraction)
    assert output.measurements["secagg/bits_per_client"] == 32 * 7


def test_too_many_clients_for_the_modulus_is_an_error():
    secagg = SecureAggregation(clip_norm=1.0, quantization_bits=8, modulus_bits=10)
    with pytest.raises(AggregationError, match="raise modulus_bits"):
        run(secagg, from_vectors(np.zeros((5, 7))))


def test_fewer_than_two_survivors_aborts_the_round():
    output = run(SecureAggregation(clip_norm=1.0), from_vectors(np.ones((1, 7))))
    assert output.measurements["secagg/aborted"] == 1
    np.testing.assert_array_equal(to_vector(output.result), np.zeros(7))
