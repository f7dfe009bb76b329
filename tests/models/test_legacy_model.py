"""An older-interface TrainableModel trains under FedAvg and aggregates its own outputs."""
import numpy as np
import pytest
import tensorflow as tf

import fedsim
import fedsim.algorithms
import fedsim.client
from tests.models.toy_models import LegacyLinearRegression, regression_clients

LR, BATCH = 0.1, 3


def _local_training_by_hand(w, b, client):
    """SGD on the MSE with the batch loss taken before each step; returns (w, b, losses, sizes)."""
    x, y = client["x"].astype(np.float64), client["y"].astype(np.float64)
    losses, sizes = [], []
    for start in range(0, len(x), BATCH):
        xb, yb = x[start:start + BATCH], y[start:start + BATCH]
        residual = xb @ w + b - yb
        losses.append(float(np.mean(residual ** 2)))
        sizes.append(len(xb))
        w = w - LR * 2 * xb.T @ residual / len(xb)
        b = b - LR * 2 * residual.mean(axis=0)
    return w, b, losses, sizes


def test_trains_with_its_own_train_on_batch_and_aggregates_with_its_computation():
    clients = regression_clients([5, 9, 4], seed=1)
    process = fedsim.build_fedavg(lambda: LegacyLinearRegression(LR), batch_size=BATCH)
    result = process.next(process.initialize(),
                          [tf.data.Dataset.from_tensor_slices(c) for c in clients])

    w0, b0 = np.zeros((2, 1)), np.zeros(1)
    deltas_w, deltas_b, counts, client_losses, max_losses = [], [], [], [], []
    for client in clients:
        w, b, losses, sizes = _local_training_by_hand(w0, b0, client)
        deltas_w.append(w - w0)
        deltas_b.append(b - b0)
        counts.append(sum(sizes))
        client_losses.append(np.dot(losses, sizes) / sum(sizes))
        max_losses.append(max(losses))
    share = np.array(counts) / sum(counts)
    np.testing.assert_allclose(result.state.model_weights.trainable[0],
                               sum(s * d for s, d in zip(share, deltas_w)), atol=1e-5)
    np.testing.assert_allclose(result.state.model_weights.trainable[1],
                               sum(s * d for s, d in zip(share, deltas_b)), atol=1e-5)

    metrics = result.metrics
    assert metrics["num_examples"] == 18
    assert metrics["loss"] == pytest.approx(np.dot(share, client_losses), rel=1e-5)
    assert metrics["mean_client_loss"] == pytest.approx(np.mean(client_losses), rel=1e-5)
    assert metrics["max_loss"] == pytest.approx(max(max_losses), rel=1e-5)
    assert metrics["min_client_max_loss"] == pytest.approx(min(max_losses), rel=1e-5)


def test_local_outputs_start_from_zero_for_every_client_and_round():
    clients = regression_clients([6, 6], seed=2)
    process = fedsim.build_fedavg(lambda: LegacyLinearRegression(LR), batch_size=BATCH)
    state = process.initialize()
    for _ in range(3):
        result = process.next(state, [tf.data.Dataset.from_tensor_slices(c) for c in clients])
        state = result.state
        assert result.metrics["num_examples"] == 12


def test_runs_enhanced_and_in_the_simulation_loop():
    clients = regression_clients([5, 7, 6, 8], seed=3)
    data = fedsim.ClientData.from_tensor_slices({str(i): c for i, c in enumerate(clients)})
    process = fedsim.build_fedavg(lambda: fedsim.enhance(LegacyLinearRegression(LR)), batch_size=BATCH)
    history = fedsim.simulate(process, data, rounds=8, sampler=fedsim.UniformSampler(2, seed=0),
                              progress=False).history
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]


def test_fedsgd_takes_the_gradient_of_forward_pass_not_the_models_own_step():
    """FedSGD's client gradient is the model's, with no optimizer: train_on_batch (a step of the
    model's own learning rate) would give 0.05 times it."""
    clients = regression_clients([5, 9, 4], seed=4)
    process = fedsim.algorithms.build_fedsgd(lambda: LegacyLinearRegression(0.05), server_optimizer=fedsim.SGD(1.0))
    result = process.next(process.initialize(), [tf.data.Dataset.from_tensor_slices(c) for c in clients])

    grad_w, grad_b, counts = [], [], []
    for client in clients:  # the MSE's gradient at w = 0, b = 0 over all the client's examples
        x, y = client["x"].astype(np.float64), client["y"].astype(np.float64)
        residual = -y
        grad_w.append(2 * x.T @ residual / len(x))
        grad_b.append(2 * residual.mean(axis=0))
        counts.append(len(x))
    share = np.array(counts) / sum(counts)
    np.testing.assert_allclose(result.state.model_weights.trainable[0],
                               -sum(s * g for s, g in zip(share, grad_w)), atol=1e-5)
    np.testing.assert_allclose(result.state.model_weights.trainable[1],
                               -sum(s * g for s, g in zip(share, grad_b)), atol=1e-5)
    assert result.metrics["num_examples"] == 18


def test_a_client_optimizer_the_model_would_ignore_is_refused():
    with pytest.raises(fedsim.client.ClientOptimizerError, match="its own optimizer is in charge"):
        fedsim.build_fedavg(lambda: LegacyLinearRegression(LR), client_optimizer=fedsim.SGD(0.1))
