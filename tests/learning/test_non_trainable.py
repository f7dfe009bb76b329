"""Non-trainable weights (issue 15, item 4): keep the server's, average the clients', or keep them per client (FedBN).

The model normalizes its raw features with BatchNormalization, so each
client's moving statistics depend on its data alone: a NumPy reference
(Keras's rule, ``moving = moving * momentum + batch_statistic * (1 - momentum)``
with the biased batch variance) gives them, on every executor.
"""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim import algorithms
from fedsim.execution import MultiDeviceExecutor, SequentialExecutor, VectorizedExecutor
from fedsim.optimizers import SGD

FEATURES, CLASSES, MOMENTUM, EPSILON, BATCH = 3, 2, 0.5, 1e-3, 4
SIZES = (8, 5, 6)
IDS = ["a", "b", "c"]
EXECUTORS = {
    "sequential": SequentialExecutor,
    "vectorized": VectorizedExecutor,
    "multi_device": lambda work: MultiDeviceExecutor(work, ["/device:CPU:0", "/device:CPU:0"]),
}


def model_fn():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON),
        keras.layers.Dense(CLASSES),
    ])
    spec = (tf.TensorSpec([None, FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec)


def clients():
    rng = np.random.default_rng(0)
    # Each client's features have their own offset and scale (feature shift: FedBN's setting).
    return [
        ((rng.normal(size=(n, FEATURES)) * (1 + i) + 3 * i).astype(np.float32),
         rng.integers(0, CLASSES, n).astype(np.int32))
        for i, n in enumerate(SIZES)
    ]


def datasets():
    return [tf.data.Dataset.from_tensor_slices(c) for c in clients()]


def numpy_statistics(x, mean, variance):
    """Keras's BatchNormalization moving statistics after one pass over ``x`` in batches of BATCH."""
    mean, variance = np.array(mean, np.float64), np.array(variance, np.float64)
    for start in range(0, len(x), BATCH):
        batch = x[start:start + BATCH].astype(np.float64)
        mean = mean * MOMENTUM + batch.mean(axis=0) * (1 - MOMENTUM)
        variance = variance * MOMENTUM + batch.var(axis=0) * (1 - MOMENTUM)
    return mean, variance


def build(rule, executor="sequential"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        process = algorithms.build_fedavg(
            model_fn, SGD(0.1), batch_size=BATCH, executor_fn=EXECUTORS[executor], non_trainable=rule)
    return process, [w for w in caught if "keep batch statistics" in str(w.message)]


def run_rounds(process, rounds):
    state, states = process.initialize(), []
    for _ in range(rounds):
        state = process.next(state, datasets(), IDS).state
        states.append(state)
    return states


def statistics(weights):
    mean, variance = weights.non_trainable
    return np.asarray(mean, np.float64), np.asarray(variance, np.float64)


def test_keep_is_the_default_warns_once_and_leaves_the_server_statistics():
    process, caught = build("keep")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "non_trainable='keep'" in message and "'average'" in message and "'per_client'" in message
    (state,) = run_rounds(process, 1)
    mean, variance = statistics(state.model_weights)
    np.testing.assert_array_equal(mean, np.zeros(FEATURES))
    np.testing.assert_array_equal(variance, np.ones(FEATURES))
    assert process.non_trainable == "keep" and build("average")[1] == []


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_average_gives_the_example_weighted_mean_of_the_clients_statistics(executor):
    process, _ = build("average", executor)
    states = run_rounds(process, 2)
    start = (np.zeros(FEATURES), np.ones(FEATURES))
    for state in states:
        finals = [numpy_statistics(x, *start) for x, _ in clients()]
        weights = np.array(SIZES, np.float64) / sum(SIZES)
        expected = [sum(w * f[k] for w, f in zip(weights, finals)) for k in (0, 1)]
        got = statistics(state.model_weights)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
        start = expected  # round 2 starts every client from the averaged statistics


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_per_client_keeps_each_clients_statistics_and_the_servers_never_change(executor):
    process, _ = build("per_client", executor)
    states = run_rounds(process, 2)
    for state in states:
        mean, variance = statistics(state.model_weights)
        np.testing.assert_array_equal(mean, np.zeros(FEATURES))
        np.testing.assert_array_equal(variance, np.ones(FEATURES))
    for client_id, (x, _) in zip(IDS, clients()):
        after_one = numpy_statistics(x, np.zeros(FEATURES), np.ones(FEATURES))
        expected = numpy_statistics(x, *after_one)  # round 2 started from its own round-1 values
        stored = process.non_trainable_store.get(client_id)
        for g, e in zip(stored, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def numpy_loss(weights, statistics_, x, y):
    """Mean cross-entropy of the model in inference mode (moving statistics), in NumPy."""
    gamma, beta, kernel, bias = (np.asarray(w, np.float64) for w in weights.trainable)
    mean, variance = (np.asarray(s, np.float64) for s in statistics_)
    normalized = (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta
    logits = normalized @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y].mean()


def test_per_client_evaluation_uses_each_clients_own_statistics():
    process, _ = build("per_client")
    (state,) = run_rounds(process, 1)
    data = clients()
    # Clients a and b trained; "new" never did, so it is evaluated with the server's statistics.
    eval_ids = ["a", "b", "new"]
    eval_sets = [tf.data.Dataset.from_tensor_slices(data[0]), tf.data.Dataset.from_tensor_slices(data[1]),
                 tf.data.Dataset.from_tensor_slices(data[2])]
    metrics = process.evaluate(state.model_weights, eval_sets, eval_ids)
    server = (np.zeros(FEATURES), np.ones(FEATURES))
    own = [process.non_trainable_store.get("a"), process.non_trainable_store.get("b"), server]
    losses = [numpy_loss(state.model_weights, s, x.astype(np.float64), y) for s, (x, y) in zip(own, data)]
    expected = np.average(losses, weights=SIZES)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    without_ids = process.evaluate(state.model_weights, eval_sets)  # no ids: the server's statistics
    server_losses = [numpy_loss(state.model_weights, server, x.astype(np.float64), y) for x, y in data]
    np.testing.assert_allclose(without_ids["loss"], np.average(server_losses, weights=SIZES), rtol=1e-5)


def test_an_unknown_rule_is_named():
    with pytest.raises(ValueError, match=r"non_trainable='fedbn' must be one of \['keep', 'average', 'per_client'\]"):
        algorithms.build_fedavg(model_fn, SGD(0.1), batch_size=BATCH, non_trainable="fedbn")
