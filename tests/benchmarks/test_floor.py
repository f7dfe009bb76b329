"""benchmarks.floor: the FLOP counter against hand counts, and the Keras loop against plain SGD steps.

No timing is asserted (timings live in benchmarks/RESULTS.md).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import floor

# The counter also counts bias adds and their gradients, the loss and the
# update's multiplies; the hand formula counts multiply-adds only.
TOLERANCE = 0.05


def dense_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])


def conv_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(6)])


# Per example: forward 2*in*out per Dense; weight gradients the same; input
# gradients for every layer but the first.
DENSE_FORWARD = 2 * (32 * 64 + 64 * 10)
DENSE_TRAINING = 2 * DENSE_FORWARD + 2 * 64 * 10
# Conv2D forward: 2*k*k*cin*cout*H_out*W_out (same padding: 8x8 out).
CONV_FORWARD, CONV_DENSE_FORWARD = 2 * 3 * 3 * 3 * 4 * 8 * 8, 2 * (8 * 8 * 4) * 6
CONV_TRAINING = 2 * (CONV_FORWARD + CONV_DENSE_FORWARD) + CONV_DENSE_FORWARD


def test_hand_count_is_the_formula():
    assert floor.hand_flops(dense_model()) == DENSE_TRAINING == 12032
    assert floor.hand_flops(conv_model()) == CONV_TRAINING == 36864


@pytest.mark.parametrize("build, hand, first_input_gradient", [
    (dense_model, DENSE_TRAINING, 2 * 32 * 64),
    (conv_model, CONV_TRAINING, CONV_FORWARD),
])
def test_counted_step_flops_match_the_hand_count(build, hand, first_input_gradient):
    model = build()
    flops = floor.step_flops(model, batch=4)
    assert hand <= flops.per_example <= hand * (1 + TOLERANCE)
    # The first layer's input gradient (which TensorFlow prunes) is not counted:
    # it alone would be far outside the tolerance.
    assert first_input_gradient > hand * TOLERANCE
    # The SGD update costs per step, about one multiply per weight.
    assert 0 < flops.per_step <= 3 * model.count_params()


def test_unknown_weighted_layer_has_no_hand_count():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Embedding(10, 3)])
    with pytest.raises(ValueError, match="Embedding"):
        floor.hand_flops(model)


def test_keras_loop_is_sgd_over_every_batch():
    model, reference = dense_model(), dense_model()
    x = np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32)
    y = np.arange(10, dtype=np.int32) % 10
    floor.keras_loop(model, batch=4)(tf.constant(x), tf.constant(y))
    step = floor.sgd_step(reference)
    for start in (0, 4, 8):  # a short last batch, as a ragged client's
        step(tf.constant(x[start:start + 4]), tf.constant(y[start:start + 4]))
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_matmul_peak_runs():
    assert floor.matmul_peak(size=64, repeats=1) > 0


def test_a_round_is_its_cohorts_examples_and_batches():
    model = dense_model()
    flops = floor.step_flops(model, batch=2)

    def client(n):
        return np.zeros((n, 32), np.float32), np.zeros(n, np.int32)

    rounds = [[client(5), client(3)], [client(4)]]  # batches of 2: 3 + 2 steps, then 2 steps
    row = floor.floor_row(floor.Workload("mlp", True, model, rounds), batch=2, peak=50.0)
    per_round = [flops.per_example * 8 + flops.per_step * 5, flops.per_example * 4 + flops.per_step * 2]
    assert row["gflop_per_round"] == pytest.approx(np.median(per_round) / 1e9)
    assert row["floor_s"] == pytest.approx(row["gflop_per_round"] / 50.0)
    assert row["population"] == "ragged"
