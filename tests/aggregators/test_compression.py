"""Stochastic quantization, top-k with error feedback, random rotation."""

import math

import numpy as np
import pytest
import scipy.linalg

from fedsim.aggregators import (
    AggregationError,
    MeanAggregator,
    RandomRotation,
    StochasticQuantization,
    TopKSparsification,
)
from fedsim.aggregators.quantization import dequantize, quantize
from fedsim.aggregators.rotation import hadamard_transform
from tests.aggregators.helpers import from_vectors, run, to_vector

VECTOR = np.array([-1.0, -0.3, 0.0, 0.25, 0.7, 1.9, 2.0])


def test_quantization_is_unbiased():
    rng = np.random.default_rng(0)
    bits, draws = 2, 4000
    decoded = [dequantize(*quantize(VECTOR, bits, rng), bits) for _ in range(draws)]
    step = (VECTOR.max() - VECTOR.min()) / (2**bits - 1)
    # Rounding error per draw is within one step, so its std is <= step / 2.
    np.testing.assert_allclose(
        np.mean(decoded, axis=0), VECTOR, atol=5 * step / 2 / math.sqrt(draws)
    )


def test_quantization_wrapper_is_unbiased_over_rounds():
    quantizer = StochasticQuantization(MeanAggregator(), bits=1, seed=3)
    values = from_vectors([VECTOR, -VECTOR])
    state, results = quantizer.initialize(), []
    for _ in range(2000):
        output = run(quantizer, values, state=state)
        state = output.state
        results.append(to_vector(output.result))
    # Each client's error is within one step (its whole range), the mean's std <= step / 2.
    np.testing.assert_allclose(np.mean(results, axis=0), 0.0, atol=5 * 4.0 / 2 / math.sqrt(2000))


def test_quantized_levels_fit_in_the_reported_bits():
    bits = 3
    levels, low, high = quantize(VECTOR, bits, np.random.default_rng(1))
    assert levels.max() <= 2**bits - 1 and np.all(levels == np.round(levels))
    assert (low, high) == (-1.0, 2.0)
    output = run(StochasticQuantization(MeanAggregator(), bits=bits), from_vectors([VECTOR] * 2))
    # 7 levels of 3 bits, plus min and max as two 64-bit floats.
    assert output.measurements["quantization/bits_per_client"] == 7 * 3 + 128
    assert output.measurements["quantization/float32_bits_per_client"] == 7 * 32


def test_constant_vector_is_sent_exactly():
    constant = np.full(7, 0.3)
    decoded = dequantize(*quantize(constant, 4, np.random.default_rng(0)), 4)
    np.testing.assert_array_equal(decoded, constant)


def test_top_k_error_feedback_sends_the_whole_update_over_rounds():
    update = np.array([5.0, -4.0, 3.0, -2.0, 1.0, 0.5, -0.25, 0.125, 6.0, -7.0], dtype=np.float32)
    top_k = TopKSparsification(MeanAggregator(), fraction=0.2)  # k = 2 of 10
    state = top_k.initialize()
    sent = np.zeros(10)
    for round_num in range(5):
        value = [update] if round_num == 0 else [np.zeros(10, np.float32)]
        output = top_k.next(state, [value], np.ones(1), client_ids=["alice"])
        state = output.state
        assert np.count_nonzero(output.result[0]) <= 2
        sent += output.result[0]
    np.testing.assert_array_equal(sent, update)
    assert not np.any(state["residuals"]["alice"])
    # 2 values of 32 bits and 2 indices of ceil(log2 10) = 4 bits.
    assert output.measurements["top_k/bits_per_client"] == 2 * (32 + 4)


def test_top_k_residuals_are_kept_per_client_id():
    top_k = TopKSparsification(MeanAggregator(), fraction=0.5)
    first = top_k.next(top_k.initialize(), [[np.array([1.0, 3.0])]], np.ones(1), client_ids=[7])
    # A different client: no residual from client 7 is added to it.
    second = top_k.next(first.state, [[np.array([0.0, 0.0])]], np.ones(1), client_ids=[8])
    np.testing.assert_array_equal(second.result[0], [0.0, 0.0])
    third = top_k.next(second.state, [[np.array([0.0, 0.0])]], np.ones(1), client_ids=[7])
    np.testing.assert_array_equal(third.result[0], [1.0, 0.0])


def test_top_k_with_error_feedback_needs_client_ids():
    top_k = TopKSparsification(MeanAggregator(), fraction=0.5)
    with pytest.raises(AggregationError, match="needs client_ids"):
        run(top_k, from_vectors([VECTOR]))


def test_hadamard_transform_matches_scipy():
    vector = np.random.default_rng(0).normal(size=16)
    np.testing.assert_allclose(
        hadamard_transform(vector), scipy.linalg.hadamard(16) @ vector / 4, rtol=1e-12
    )


def test_rotation_around_a_mean_is_exact():
    vectors = np.random.default_rng(1).normal(size=(4, 7))
    output = run(RandomRotation(MeanAggregator(), seed=2), from_vectors(vectors))
    np.testing.assert_allclose(to_vector(output.result), vectors.mean(axis=0), atol=1e-12)
    assert output.measurements["rotation/padded_dimension"] == 8


def test_rotation_then_quantization_is_unbiased_and_counts_padded_bits():
    chain = RandomRotation(StochasticQuantization(MeanAggregator(), bits=2), seed=1)
    values = from_vectors([VECTOR])
    state, results = chain.initialize(), []
    for _ in range(1000):
        output = run(chain, values, state=state)
        state = output.state
        results.append(to_vector(output.result))
    np.testing.assert_allclose(np.mean(results, axis=0), VECTOR, atol=0.1)
    assert output.measurements["quantization/bits_per_client"] == 8 * 2 + 128
