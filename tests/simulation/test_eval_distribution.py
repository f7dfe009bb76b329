"""Evaluation records the aggregate and each metric's spread over the test clients, against NumPy."""
import numpy as np
import pytest
import tensorflow as tf

from fedsim.algorithms import build_fedavg
from fedsim.data import ClientData
from fedsim.simulation.loop import evaluate_population, evaluation_sample
from tests.algorithms.helpers import IDS, initial_params, make_clients, model_fn


def population(clients, ids=IDS):
    return ClientData.from_clients_and_tf_fn(list(ids), lambda c: tf.data.Dataset.from_tensor_slices(
        clients[list(ids).index(c)]))


def numpy_loss(params, x, y):
    """Mean softmax cross-entropy of logistic regression, by hand."""
    logits = x.astype(np.float64) @ params[0] + params[1]
    logits -= logits.max(axis=1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probabilities[np.arange(len(y)), y]))


def test_aggregate_and_per_client_spread_match_numpy():
    params, clients = initial_params(), make_clients()
    process = build_fedavg(model_fn(params), batch_size=4)
    aggregate, spread = evaluate_population(process, process.initialize().model_weights, population(clients))
    per_client = np.array([numpy_loss(params, x, y) for x, y in clients])
    pooled = numpy_loss(params, np.concatenate([x for x, _ in clients]), np.concatenate([y for _, y in clients]))
    assert aggregate["loss"] == pytest.approx(pooled, rel=1e-5)
    loss = spread["loss"]
    assert loss["mean"] == pytest.approx(per_client.mean(), rel=1e-5)
    assert loss["p50"] == pytest.approx(np.percentile(per_client, 50), rel=1e-5)
    assert loss["worst"] == pytest.approx(per_client.max(), rel=1e-5)  # a loss: the highest is the worst
    assert loss["worst_client"] == IDS[int(np.argmax(per_client))]


def test_a_client_without_examples_counts_in_the_aggregate_only():
    params, clients = initial_params(), make_clients()
    empty = (np.zeros((0, 6), np.float32), np.zeros(0, np.int32))
    process = build_fedavg(model_fn(params), batch_size=4)
    data = population(clients + [empty], IDS + ("empty",))
    aggregate, spread = evaluate_population(process, process.initialize().model_weights, data)
    per_client = [numpy_loss(params, x, y) for x, y in clients]
    assert aggregate["num_examples"] == sum(len(y) for _, y in clients)
    assert spread["loss"]["mean"] == pytest.approx(np.mean(per_client), rel=1e-5)


def test_a_fixed_sample_of_test_clients():
    data = population(make_clients())
    sample = evaluation_sample(data, 2, seed=7)
    assert sample == evaluation_sample(data, 2, seed=7) and len(set(sample)) == 2 and set(sample) <= set(IDS)
    assert evaluation_sample(data, None, seed=7) is None and evaluation_sample(data, 10, seed=7) is None
    params, clients = initial_params(), make_clients()
    process = build_fedavg(model_fn(params), batch_size=4)
    aggregate, _ = evaluate_population(process, process.initialize().model_weights, data, sample)
    chosen = [clients[IDS.index(c)] for c in sample]
    assert aggregate["num_examples"] == sum(len(y) for _, y in chosen)
