"""Norm clipping and zeroing, fixed and adaptive."""

import numpy as np

from fedsim.aggregators import Clipping, CoordinateMedian, MeanAggregator, Zeroing
from fedsim.aggregators.norm_bound import NormBound
from tests.aggregators.helpers import from_vectors, run, to_vector


def test_clipping_scales_large_updates_to_the_clip_norm():
    vectors = np.zeros((3, 7))
    vectors[0, 0] = 0.5  # norm 0.5: kept
    vectors[1, :2] = [3.0, 4.0]  # norm 5: scaled by 1/5
    vectors[2, 6] = -2.0  # norm 2: scaled by 1/2
    output = run(Clipping(MeanAggregator(weighted=False), clip_norm=1.0), from_vectors(vectors))
    expected = (vectors[0] + vectors[1] / 5 + vectors[2] / 2) / 3
    np.testing.assert_allclose(to_vector(output.result), expected, rtol=1e-12)
    assert output.measurements["clip/num_clipped"] == 2
    assert output.measurements["clip/clip_norm"] == 1.0
    assert output.measurements["mean/total_weight"] == 3


def test_adaptive_clip_norm_converges_to_the_target_quantile():
    clipping = Clipping(MeanAggregator(), clip_norm=0.1, target_quantile=0.7, learning_rate=0.2)
    stream = np.random.default_rng(0).lognormal(mean=1.0, sigma=0.5, size=(400, 50))
    state = clipping.initialize()
    history = []
    for norms in stream:
        # One-coordinate updates whose norms are this round's stream values.
        vectors = np.zeros((50, 7))
        vectors[:, 0] = norms
        state = run(clipping, from_vectors(vectors), state=state).state
        history.append(state["clip_norm"])
    target = np.quantile(stream, 0.7)
    assert abs(np.mean(history[-100:]) - target) < 0.05 * target


def test_norm_bound_moves_geometrically():
    bound = NormBound(2.0, target_quantile=0.5, learning_rate=0.1)
    # 3 of 4 norms are <= 2, so the bound shrinks by exp(-0.1 * (0.75 - 0.5)).
    new = bound.update(2.0, np.array([1.0, 1.5, 2.0, 3.0]))
    np.testing.assert_allclose(new, 2.0 * np.exp(-0.025), rtol=1e-12)
    assert NormBound(2.0).update(2.0, np.array([5.0])) == 2.0


def test_zeroing_a_nan_update_gives_a_finite_result_and_counts_it():
    vectors = np.arange(35, dtype=np.float64).reshape(5, 7) / 10
    vectors[2, 3] = np.nan
    output = run(Zeroing(MeanAggregator(), norm_bound=100.0), from_vectors(vectors))
    assert np.all(np.isfinite(to_vector(output.result)))
    assert output.measurements["zeroing/num_zeroed"] == 1
    vectors[2] = 0.0  # the zeroed client still counts, as a zero update
    np.testing.assert_allclose(to_vector(output.result), vectors.mean(axis=0), rtol=1e-12)


def test_zeroing_counts_inf_and_norms_above_the_bound():
    vectors = np.ones((4, 7))
    vectors[0, 0] = np.inf
    vectors[1] *= 10.0  # norm sqrt(700) > 20
    output = run(Zeroing(CoordinateMedian(), norm_bound=20.0), from_vectors(vectors))
    assert output.measurements["zeroing/num_zeroed"] == 2
    assert output.measurements["zeroing/norm_bound"] == 20.0


def test_adaptive_zeroing_bound_tracks_the_norms():
    zeroing = Zeroing(MeanAggregator(), norm_bound=1.0, target_quantile=0.9)
    vectors = np.zeros((10, 7))
    vectors[:, 0] = np.arange(1.0, 11.0)  # norms 1..10; only the first is <= 1
    output = run(zeroing, from_vectors(vectors))
    assert output.measurements["zeroing/num_zeroed"] == 9
    np.testing.assert_allclose(output.state["norm_bound"], np.exp(-0.2 * (0.1 - 0.9)), rtol=1e-12)


def test_wrappers_report_inner_measurements_and_keep_inner_state():
    chain = Zeroing(Clipping(MeanAggregator(), clip_norm=1.0, target_quantile=0.5), norm_bound=10.0)
    output = run(chain, from_vectors(np.ones((3, 7))))
    assert {"zeroing/num_zeroed", "clip/num_clipped", "mean/total_weight"} <= set(
        output.measurements
    )
    assert output.state["inner"]["clip_norm"] != 1.0  # the adaptive clip norm moved
