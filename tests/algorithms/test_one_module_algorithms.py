"""FedDyn, SCAFFOLD option I and q-FedSGD (each one module over the round's blocks) against NumPy
references written from their papers: model, server state and client state, one and three rounds."""
import numpy as np
import pytest

from fedsim.algorithms import build_feddyn, build_q_fedsgd, build_scaffold_option_i
from tests.algorithms import reference as ref
from tests.algorithms.helpers import IDS, as_float64, assert_close, initial_params, make_clients, model_fn, run_rounds

CLIENTS = make_clients()
COHORTS = [[0, 1, 2], [1, 2, 3], [0, 3]]
POPULATION = 6  # more clients than ever take part: |P|/m < 1 matters


def feddyn_reference(cohorts, alpha, lr=0.1, batch_size=4, epochs=2):
    """Acar et al. 2021, Algorithm 1, with local SGD on the client objective."""
    params = initial_params()
    clients = as_float64(CLIENTS)
    h = [np.zeros_like(p) for p in params]
    gradients = {}
    for cohort in cohorts:
        locals_ = []
        for i in cohort:
            g = gradients.get(i, [np.zeros_like(p) for p in params])
            # grad of L_k(w) - <g, w> + alpha/2 ||w - theta||^2: offset -g, proximal alpha.
            new, _ = ref.local_sgd(params, *clients[i], batch_size, lr, epochs=epochs, mu=alpha,
                                   offset=[-a for a in g])
            gradients[i] = [a - alpha * (n - p) for a, n, p in zip(g, new, params)]
            locals_.append(new)
        h = [hk - alpha / POPULATION * sum(local[k] - params[k] for local in locals_) for k, hk in enumerate(h)]
        params = [sum(local[k] for local in locals_) / len(locals_) - h[k] / alpha for k in range(len(params))]
    return params, h, gradients


@pytest.mark.parametrize("rounds", [1, 3])
def test_feddyn(rounds):
    process = build_feddyn(model_fn(initial_params()), POPULATION, alpha=0.5, client_learning_rate=0.1,
                           batch_size=4, local_epochs=2)
    state = run_rounds(process, CLIENTS, COHORTS[:rounds])
    params, h, gradients = feddyn_reference(COHORTS[:rounds], alpha=0.5)
    assert_close(state.model_weights.trainable, params)
    assert_close(state.algorithm_state["h"], h)
    for i, expected in gradients.items():
        assert_close(process.client_store.get(IDS[i]), expected)


def scaffold_option_i_reference(cohorts, lr=0.1, batch_size=4):
    """Karimireddy et al. 2020, Algorithm 1 with option I: c_i+ = grad f_i(x), the full-batch gradient."""
    params = initial_params()
    clients = as_float64(CLIENTS)
    c = [np.zeros_like(p) for p in params]
    client_c = {}
    for cohort in cohorts:
        deltas, c_deltas = [], []
        for i in cohort:
            c_i = client_c.get(i, [np.zeros_like(p) for p in params])
            new, _ = ref.local_sgd(params, *clients[i], batch_size, lr, offset=[s - a for s, a in zip(c, c_i)])
            c_new = ref.loss_and_gradient(params, *clients[i])[1]
            c_deltas.append([n - a for n, a in zip(c_new, c_i)])
            client_c[i] = c_new
            deltas.append([n - p for n, p in zip(new, params)])
        params = [p + d for p, d in zip(params, ref.weighted_mean(deltas, [1.0] * len(cohort)))]
        c = [s + sum(d[k] for d in c_deltas) / POPULATION for k, s in enumerate(c)]
    return params, c, client_c


@pytest.mark.parametrize("rounds", [1, 3])
def test_scaffold_option_i(rounds):
    process = build_scaffold_option_i(model_fn(initial_params()), POPULATION, client_learning_rate=0.1, batch_size=4)
    state = run_rounds(process, CLIENTS, COHORTS[:rounds])
    params, c, client_c = scaffold_option_i_reference(COHORTS[:rounds])
    assert_close(state.model_weights.trainable, params)
    assert_close(state.algorithm_state["control_variate"], c)
    for i, expected in client_c.items():
        assert_close(process.client_store.get(IDS[i]), expected)


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("q", [0.0, 1.5])
def test_q_fedsgd(rounds, q):
    """Li et al. 2020, Algorithm 1: w <- w - sum F^q grad F / sum (q F^(q-1) ||grad F||^2 + L F^q)."""
    lipschitz = 4.0
    process = build_q_fedsgd(model_fn(initial_params()), q=q, lipschitz=lipschitz)
    state = run_rounds(process, CLIENTS, [[0, 1, 2, 3]] * rounds)
    params = initial_params()
    for _ in range(rounds):
        numerator, denominator = [np.zeros_like(p) for p in params], 0.0
        for x, y in as_float64(CLIENTS):
            loss, gradient = ref.loss_and_gradient(params, x, y)
            loss += 1e-10
            numerator = [a + loss**q * g for a, g in zip(numerator, gradient)]
            denominator += q * loss ** (q - 1) * sum(np.sum(g * g) for g in gradient) + lipschitz * loss**q
        params = [p - a / denominator for p, a in zip(params, numerator)]
    assert_close(state.model_weights.trainable, params)


def test_q_fedsgd_with_q_zero_is_fedsgd_with_step_one_over_l():
    """q = 0: h_k = L, so the step is the mean gradient over L (unweighted)."""
    process = build_q_fedsgd(model_fn(initial_params()), q=0.0, lipschitz=2.0)
    state = run_rounds(process, CLIENTS, [[0, 1, 2, 3]])
    params = initial_params()
    gradients = [ref.loss_and_gradient(params, x, y)[1] for x, y in as_float64(CLIENTS)]
    expected = [p - g / 2.0 for p, g in zip(params, ref.weighted_mean(gradients, [1.0] * 4))]
    assert_close(state.model_weights.trainable, expected)
