"""FedAvg, FedSGD, FedProx and FedOpt against NumPy references, one and three rounds."""
import numpy as np
import pytest

from fedsim.algorithms import (
    build_fedavg,
    build_fedopt,
    build_fedprox,
    build_fedsgd,
    fedadagrad_server_optimizer,
    fedadam_server_optimizer,
    fedavgm_server_optimizer,
    fedyogi_server_optimizer,
)
from fedsim.optimizers import SGD
from fedsim.simulation.sampling import Stragglers
from tests.algorithms import reference as ref
from tests.algorithms.helpers import IDS, as_float64, assert_close, initial_params, make_clients, model_fn, run_rounds

CLIENTS = make_clients()
ALL = [0, 1, 2, 3]


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("weighted", [True, False])
def test_fedavg(rounds, weighted):
    process = build_fedavg(model_fn(initial_params()), SGD(0.1), weighted=weighted, batch_size=4)
    state = run_rounds(process, CLIENTS, [ALL] * rounds)
    params = initial_params()
    for _ in range(rounds):
        params = ref.fedavg_round(params, as_float64(CLIENTS), 4, 0.1, weighted=weighted)
    assert_close(state.model_weights.trainable, params)


@pytest.mark.parametrize("rounds", [1, 3])
def test_fedsgd_applies_the_example_weighted_full_batch_gradient(rounds):
    process = build_fedsgd(model_fn(initial_params()), SGD(0.5))
    state = run_rounds(process, CLIENTS, [ALL] * rounds)
    params = initial_params()
    counts = [len(y) for _, y in CLIENTS]
    for _ in range(rounds):
        gradients = [ref.loss_and_gradient(params, x, y)[1] for x, y in as_float64(CLIENTS)]
        params = [p - 0.5 * g for p, g in zip(params, ref.weighted_mean(gradients, counts))]
    assert_close(state.model_weights.trainable, params)


@pytest.mark.parametrize("rounds", [1, 3])
def test_fedprox_with_stragglers_keeps_partial_work(rounds):
    stragglers = Stragglers(0.5, seed=3)
    process = build_fedprox(model_fn(initial_params()), mu=0.5, client_optimizer=SGD(0.1), batch_size=4,
                            local_epochs=3, stragglers=stragglers)
    state = run_rounds(process, CLIENTS, [ALL] * rounds)
    params = initial_params()
    for round_num in range(1, rounds + 1):
        epochs = [stragglers.local_epochs(round_num, client_id, 3) for client_id in IDS]
        params = ref.fedavg_round(params, as_float64(CLIENTS), 4, 0.1, epochs, mu=0.5)
    assert sorted(set(stragglers.local_epochs(r, c, 3) for r in (1, 2, 3) for c in IDS)) != [3]
    assert_close(state.model_weights.trainable, params)


def test_fedavg_drops_stragglers_and_fedprox_mu_zero_equals_fedavg():
    stragglers = Stragglers(0.5, seed=3)
    dropping = build_fedavg(model_fn(initial_params()), SGD(0.1), batch_size=4, local_epochs=3, stragglers=stragglers)
    result = dropping.next(dropping.initialize(), [tf_dataset(c) for c in CLIENTS], list(IDS))
    kept = [i for i, c in enumerate(IDS) if stragglers.local_epochs(1, c, 3) == 3]
    assert 0 < len(kept) < 4 and result.num_clients == len(kept)
    expected = ref.fedavg_round(initial_params(), [as_float64(CLIENTS)[i] for i in kept], 4, 0.1, [3] * len(kept))
    assert_close(result.state.model_weights.trainable, expected)

    fedavg = build_fedavg(model_fn(initial_params()), SGD(0.1), batch_size=4, local_epochs=2)
    fedprox = build_fedprox(model_fn(initial_params()), mu=0.0, client_optimizer=SGD(0.1), batch_size=4, local_epochs=2)
    a, b = run_rounds(fedavg, CLIENTS, [ALL] * 2), run_rounds(fedprox, CLIENTS, [ALL] * 2)
    for x, y in zip(a.model_weights.trainable, b.model_weights.trainable):
        np.testing.assert_array_equal(x, y)


def tf_dataset(client):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(client)


def _server_reference(kind, params, gradient, state, lr, tau=1e-3, b1=0.9, b2=0.99):
    """One step of Reddi et al.'s server rules (and FedAvgM), float64."""
    if kind == "avgm":
        state["m"] = [0.9 * m + g for m, g in zip(state["m"], gradient)]
        return [p - lr * m for p, m in zip(params, state["m"])]
    for k, g in enumerate(gradient):
        if kind == "adam":
            state["v"][k] = b2 * state["v"][k] + (1 - b2) * g * g
        elif kind == "yogi":
            state["v"][k] = state["v"][k] - (1 - b2) * g * g * np.sign(state["v"][k] - g * g)
        else:
            state["v"][k] = state["v"][k] + g * g
        state["m"][k] = g if kind == "adagrad" else b1 * state["m"][k] + (1 - b1) * g
    return [p - lr * m / (np.sqrt(v) + tau) for p, m, v in zip(params, state["m"], state["v"])]


SERVER_OPTIMIZERS = {
    "avgm": lambda: fedavgm_server_optimizer(0.7, momentum=0.9),
    "adam": lambda: fedadam_server_optimizer(0.05, tau=1e-3),
    "yogi": lambda: fedyogi_server_optimizer(0.05, tau=1e-3),
    "adagrad": lambda: fedadagrad_server_optimizer(0.05, tau=1e-3),
}


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("kind", sorted(SERVER_OPTIMIZERS))
def test_fedopt_server_rules_and_their_state(kind, rounds):
    process = build_fedopt(model_fn(initial_params()), SERVER_OPTIMIZERS[kind](),
                           client_optimizer=SGD(0.1), batch_size=4)
    state = run_rounds(process, CLIENTS, [ALL] * rounds)
    params = initial_params()
    tau = 1e-3
    server = {"m": [np.zeros_like(p) for p in params], "v": [np.full(p.shape, tau**2) for p in params]}
    lr = 0.7 if kind == "avgm" else 0.05
    for _ in range(rounds):
        averaged = ref.fedavg_round(params, as_float64(CLIENTS), 4, 0.1)
        params = _server_reference(kind, params, [p - a for p, a in zip(params, averaged)], server, lr)
    assert_close(state.model_weights.trainable, params)
    if kind == "avgm":
        assert_close(state.optimizer_state["momentum"], server["m"])
    else:
        assert_close(state.optimizer_state["v"], server["v"], atol=1e-7)
        assert int(state.optimizer_state["step"]) == rounds


def test_fedopt_with_plain_server_sgd_is_fedavg():
    fedopt = build_fedopt(model_fn(initial_params()), SGD(1.0), client_optimizer=SGD(0.1), batch_size=4)
    fedavg = build_fedavg(model_fn(initial_params()), SGD(0.1), batch_size=4)
    a, b = run_rounds(fedopt, CLIENTS, [ALL] * 2), run_rounds(fedavg, CLIENTS, [ALL] * 2)
    for x, y in zip(a.model_weights.trainable, b.model_weights.trainable):
        np.testing.assert_array_equal(x, y)
