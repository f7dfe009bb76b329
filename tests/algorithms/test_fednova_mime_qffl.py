"""FedNova, MimeLite and q-FFL against NumPy references, one and three rounds."""
import numpy as np
import pytest

from fedsim.algorithms import build_fednova, build_mime_lite, build_qffl
from fedsim.optimizers import SGD
from fedsim.simulation.sampling import Stragglers
from tests.algorithms import reference as ref
from tests.algorithms.helpers import IDS, as_float64, assert_close, initial_params, make_clients, model_fn, run_rounds

CLIENTS = make_clients()
ALL = [0, 1, 2, 3]


@pytest.mark.parametrize("rounds", [1, 3])
def test_fednova_normalizes_by_local_steps(rounds):
    stragglers = Stragglers(0.5, seed=3)
    process = build_fednova(model_fn(initial_params()), client_learning_rate=0.1, batch_size=4, local_epochs=3,
                            stragglers=stragglers)
    state = run_rounds(process, CLIENTS, [ALL] * rounds)
    params = initial_params()
    counts = np.array([len(y) for _, y in CLIENTS], np.float64)
    p = counts / counts.sum()
    for round_num in range(1, rounds + 1):
        normalized, taus = [], []
        for client_id, (x, y) in zip(IDS, as_float64(CLIENTS)):
            epochs = stragglers.local_epochs(round_num, client_id, 3)
            new, tau = ref.local_sgd(params, x, y, 4, 0.1, epochs)
            normalized.append([(n - w) / tau for n, w in zip(new, params)])
            taus.append(tau)
        assert len(set(taus)) > 1  # the clients really differ in local steps
        tau_eff = float(p @ np.array(taus))
        params = [w + tau_eff * d for w, d in zip(params, ref.weighted_mean(normalized, counts))]
    assert_close(state.model_weights.trainable, params)


@pytest.mark.parametrize("rounds", [1, 3])
def test_mime_lite_applies_frozen_server_momentum(rounds):
    process = build_mime_lite(model_fn(initial_params()), SGD(0.1, momentum=0.9), server_learning_rate=0.7,
                              batch_size=4)
    state = run_rounds(process, CLIENTS, [ALL] * rounds)
    params = initial_params()
    momentum = [np.zeros_like(w) for w in params]
    counts = [len(y) for _, y in CLIENTS]
    for _ in range(rounds):
        gradients, deltas = [], []
        for x, y in as_float64(CLIENTS):
            gradients.append(ref.loss_and_gradient(params, x, y)[1])
            new, _ = ref.local_sgd(params, x, y, 4, 0.1, momentum=momentum, beta=0.9)
            deltas.append([n - w for n, w in zip(new, params)])
        params = [w + 0.7 * d for w, d in zip(params, ref.weighted_mean(deltas, counts))]
        momentum = [0.9 * m + g for m, g in zip(momentum, ref.weighted_mean(gradients, counts))]
    assert_close(state.model_weights.trainable, params)
    assert_close(state.algorithm_state["optimizer_state"]["momentum"], momentum)


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("q", [0.0, 2.0])
def test_qffl(rounds, q):
    process = build_qffl(model_fn(initial_params()), q=q, client_learning_rate=0.1, batch_size=4)
    state = run_rounds(process, CLIENTS, [ALL] * rounds)
    params = initial_params()
    lipschitz = 1 / 0.1
    for _ in range(rounds):
        numerator = [np.zeros_like(w) for w in params]
        denominator = 0.0
        for x, y in as_float64(CLIENTS):
            loss = ref.loss_and_gradient(params, x, y)[0] + 1e-10
            new, _ = ref.local_sgd(params, x, y, 4, 0.1)
            step = [lipschitz * (w - n) for w, n in zip(params, new)]
            numerator = [a + loss**q * s for a, s in zip(numerator, step)]
            denominator += q * loss ** (q - 1) * sum(np.sum(s * s) for s in step) + lipschitz * loss**q
        params = [w - a / denominator for w, a in zip(params, numerator)]
    assert_close(state.model_weights.trainable, params)
