"""FedAvg matches a NumPy reference written without TensorFlow."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from tests import logreg_reference as ref

SIZES = [7, 13, 4, 20, 9]
NUM_FEATURES, NUM_CLASSES, BATCH, LR = 6, 3, 4, 0.1


def _input_spec():
    return (tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))


def logreg_model_fn(kernel, bias):
    def model_fn():
        model = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES)])
        model.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return fedsim.from_keras_model(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), _input_spec())

    return model_fn


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_three_rounds_match_numpy_reference(weighted, momentum):
    rng = np.random.default_rng(42)
    kernel = rng.normal(scale=0.5, size=(NUM_FEATURES, NUM_CLASSES))
    bias = rng.normal(scale=0.5, size=NUM_CLASSES)
    clients = ref.make_clients(SIZES, NUM_FEATURES, NUM_CLASSES, seed=1)
    data = fedsim.ClientData.from_tensor_slices({str(i): c for i, c in enumerate(clients)})
    sampler = fedsim.UniformSampler(cohort_size=3, seed=7)

    process = fedsim.build_fedavg(
        logreg_model_fn(kernel, bias),
        client_optimizer=fedsim.SGD(LR, momentum=momentum),
        weighted=weighted,
        batch_size=BATCH,
    )
    result = fedsim.simulate(process, data, rounds=3, sampler=sampler, progress=False)

    for round_num in (1, 2, 3):
        cohort = [clients[i] for i in sampler.sample(round_num, len(clients))]
        kernel, bias = ref.fedavg_round(kernel, bias, cohort, BATCH, LR, weighted, momentum=momentum)
    got_kernel, got_bias = result.state.model_weights.trainable
    np.testing.assert_allclose(got_kernel, kernel, atol=1e-5)
    np.testing.assert_allclose(got_bias, bias, atol=1e-5)
    assert result.state.round_num == 3


def test_server_learning_rate_scales_the_average_delta():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    bias = np.zeros(NUM_CLASSES)
    clients = ref.make_clients([5, 8], NUM_FEATURES, NUM_CLASSES, seed=2)
    process = fedsim.build_fedavg(
        logreg_model_fn(kernel, bias), fedsim.SGD(LR), fedsim.SGD(0.5), batch_size=BATCH)
    state = process.initialize()
    datasets = [tf.data.Dataset.from_tensor_slices(c) for c in clients]
    result = process.next(state, datasets)
    want_kernel, want_bias = ref.fedavg_round(kernel, bias, clients, BATCH, LR, server_lr=0.5)
    np.testing.assert_allclose(result.state.model_weights.trainable[0], want_kernel, atol=1e-5)
    np.testing.assert_allclose(result.state.model_weights.trainable[1], want_bias, atol=1e-5)
    assert result.num_examples == 13
    assert result.metrics["num_examples"] == 13


def test_train_loss_metric_is_example_weighted_mean_of_batch_losses():
    rng = np.random.default_rng(5)
    kernel, bias = rng.normal(size=(NUM_FEATURES, NUM_CLASSES)), np.zeros(NUM_CLASSES)
    (x, y), = ref.make_clients([10], NUM_FEATURES, NUM_CLASSES, seed=3)
    process = fedsim.build_fedavg(logreg_model_fn(kernel, bias), fedsim.SGD(LR), batch_size=4)
    result = process.next(process.initialize(), [tf.data.Dataset.from_tensor_slices((x, y))])
    # The loss of each batch is taken before that batch's step.
    k, b, total = kernel.copy(), bias.copy(), 0.0
    for start in range(0, 10, 4):
        xb, yb = x[start:start + 4], y[start:start + 4]
        loss, g_k, g_b = ref.loss_and_gradient(k, b, xb, yb)
        total += loss * len(yb)
        k, b = k - LR * g_k, b - LR * g_b
    assert result.metrics["loss"] == pytest.approx(total / 10, abs=1e-5)
    assert result.metrics["num_batches"] == 3
