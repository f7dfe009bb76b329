"""Invariants every deterministic rule must keep, checked with hypothesis:
client order does not matter, identical updates come back unchanged, and
clients with update weight 0 do not count."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedsim.aggregators import (
    Bulyan,
    Clipping,
    CoordinateMedian,
    DPFedAvg,
    GeometricMedian,
    Krum,
    MeanAggregator,
    TrimmedMean,
    Zeroing,
)
from fedsim.privacy import Participation
from tests.aggregators.helpers import from_vectors, run, to_vector

RULES = {
    "weighted_mean": MeanAggregator(weighted=True),
    "unweighted_mean": MeanAggregator(weighted=False),
    "median": CoordinateMedian(),
    "trimmed_mean": TrimmedMean(beta=0.2),
    "krum": Krum(num_byzantine=1),
    "multi_krum": Krum(num_byzantine=1, num_selected=3),
    "bulyan": Bulyan(num_byzantine=1),
    "geometric_median": GeometricMedian(),
    "clipping": Clipping(MeanAggregator(), clip_norm=5.0),
    "adaptive_clipping": Clipping(MeanAggregator(), clip_norm=5.0, target_quantile=0.5),
    "zeroing": Zeroing(CoordinateMedian(), norm_bound=30.0),
    "dp_fedavg_without_noise": DPFedAvg(
        clip_norm=5.0, noise_multiplier=0.0, participation=Participation.fixed_size(100, 8)
    ),
}
# DP-FedAvg divides by the expected cohort size, so identical updates come
# back scaled by (participants / clients_per_round) rather than unchanged.
FIXED_DENOMINATOR = {"dp_fedavg_without_noise"}

cohorts = st.integers(min_value=7, max_value=10).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, (n, 7), elements=st.floats(-10, 10, width=32)),
        hnp.arrays(np.float64, (n,), elements=st.floats(0.5, 20)),
        st.permutations(range(n)),
    )
)
SETTINGS = settings(max_examples=15, deadline=None)


def result_vector(rule, vectors, weights):
    return to_vector(run(rule, from_vectors(vectors, dtype=np.float32), weights).result)


@pytest.mark.parametrize("name", sorted(RULES))
@SETTINGS
@given(cohort=cohorts)
def test_client_order_does_not_change_the_result(name, cohort):
    vectors, weights, order = cohort
    rule = RULES[name]
    expected = result_vector(rule, vectors, weights)
    permuted = result_vector(rule, vectors[list(order)], weights[list(order)])
    np.testing.assert_allclose(permuted, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(RULES))
@SETTINGS
@given(
    vector=hnp.arrays(np.float64, (7,), elements=st.floats(-1, 1, width=32)),
    n=st.integers(min_value=7, max_value=10),
)
def test_identical_updates_come_back_unchanged(name, vector, n):
    rule = RULES[name]
    result = result_vector(rule, np.tile(vector, (n, 1)), np.arange(1.0, n + 1))
    expected = vector * n / 8 if name in FIXED_DENOMINATOR else vector
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(RULES))
@SETTINGS
@given(cohort=cohorts, garbage=st.sampled_from([np.nan, np.inf, 1e30]))
def test_zero_weight_clients_do_not_count(name, cohort, garbage):
    vectors, weights, _ = cohort
    rule = RULES[name]
    expected = result_vector(rule, vectors, weights)
    # Interleave three zero-weight clients holding garbage.
    padded = np.insert(vectors, [0, 3, len(vectors)], garbage, axis=0)
    padded_weights = np.insert(weights, [0, 3, len(weights)], 0.0)
    np.testing.assert_array_equal(result_vector(rule, padded, padded_weights), expected)
