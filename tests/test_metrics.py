"""Sum-then-finalize: metrics over a cohort equal metrics over the pooled examples."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.learning import ClientWork
from fedsim.metrics import MetricsError, sum_then_finalize, sum_unfinalized


def test_accuracy_over_clients_of_very_different_sizes_is_pooled_accuracy():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))
    fed_model = fedsim.from_keras_model(
        model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    work = ClientWork(fed_model)
    weights = fedsim.ModelWeights.from_model(fed_model)

    rng = np.random.default_rng(0)
    clients = []
    for n in (3, 40, 500):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = rng.integers(0, 3, n).astype(np.int32)
        clients.append((x, y))
    per_client = [work.evaluate(weights, tf.data.Dataset.from_tensor_slices(c).batch(16)) for c in clients]
    aggregated = sum_then_finalize(fed_model.metric_finalizers())(per_client)

    # Independent: argmax of the logits computed in NumPy over all examples.
    kernel, bias = (v.numpy() for v in model.trainable_variables)
    x_all = np.concatenate([c[0] for c in clients])
    y_all = np.concatenate([c[1] for c in clients])
    pooled = np.mean(np.argmax(x_all @ kernel + bias, axis=1) == y_all)
    client_accuracies = [np.mean(np.argmax(x @ kernel + bias, 1) == y) for x, y in clients]
    assert aggregated["accuracy"] == pytest.approx(pooled, abs=1e-6)
    assert abs(np.mean(client_accuracies) - pooled) > 0.01  # the wrong answer really differs
    assert aggregated["num_examples"] == 543


def test_sums_structures_elementwise():
    summed = sum_unfinalized([{"m": [np.float32(1), np.array([1, 2])]}, {"m": [np.float32(2), np.array([3, 4])]}])
    assert summed["m"][0] == 3
    np.testing.assert_array_equal(summed["m"][1], [4, 6])


def test_mismatched_clients_and_finalizers_are_errors():
    with pytest.raises(MetricsError, match="client 1 reported metrics"):
        sum_unfinalized([{"a": [1]}, {"b": [1]}])
    with pytest.raises(MetricsError, match="not in both"):
        sum_then_finalize({"a": lambda v: v})([{"b": [1]}])
    with pytest.raises(MetricsError, match="cohort reported nothing"):
        sum_unfinalized([])
