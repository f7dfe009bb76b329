"""SCAFFOLD (option II) against a NumPy reference: model, server and client control variates."""
import numpy as np
import pytest

from fedsim.algorithms import NpzClientStore, build_fedavg, build_scaffold
from fedsim.learning import ProcessError
from fedsim.optimizers import SGD
from tests.algorithms import reference as ref
from tests.algorithms.helpers import IDS, as_float64, assert_close, datasets, initial_params, make_clients, model_fn, run_rounds

CLIENTS = make_clients()
COHORTS = [[0, 1, 2], [1, 2, 3], [0, 3]]


def scaffold_reference(cohorts, lr=0.1, server_lr=0.8, population=4, batch_size=4):
    params = initial_params()
    clients = as_float64(CLIENTS)
    c = [np.zeros_like(p) for p in params]
    client_c = {}
    for cohort in cohorts:
        deltas, c_deltas = [], []
        for i in cohort:
            c_i = client_c.get(i, [np.zeros_like(p) for p in params])
            offset = [s - a for s, a in zip(c, c_i)]
            new, steps = ref.local_sgd(params, *clients[i], batch_size, lr, offset=offset)
            c_new = [a - s + (p - n) / (steps * lr) for a, s, p, n in zip(c_i, c, params, new)]
            c_deltas.append([n - a for n, a in zip(c_new, c_i)])
            client_c[i] = c_new
            deltas.append([n - p for n, p in zip(new, params)])
        params = [p + server_lr * d for p, d in zip(params, ref.weighted_mean(deltas, [1.0] * len(cohort)))]
        c = [s + sum(d[k] for d in c_deltas) / population for k, s in enumerate(c)]
    return params, c, client_c


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("on_disk", [False, True])
def test_matches_reference(rounds, on_disk, tmp_path):
    store = NpzClientStore(tmp_path / "control_variates") if on_disk else None
    process = build_scaffold(model_fn(initial_params()), population_size=4, client_learning_rate=0.1,
                             server_learning_rate=0.8, batch_size=4, client_store=store)
    state = run_rounds(process, CLIENTS, COHORTS[:rounds])
    params, c, client_c = scaffold_reference(COHORTS[:rounds])
    assert_close(state.model_weights.trainable, params)
    assert_close(state.algorithm_state["control_variate"], c)
    for i, expected in client_c.items():
        assert_close(process.client_store.get(IDS[i]), expected)
    assert len(process.client_store) == len(client_c)


def test_first_round_with_server_lr_one_is_unweighted_fedavg():
    scaffold = build_scaffold(model_fn(initial_params()), 4, client_learning_rate=0.1, batch_size=4)
    fedavg = build_fedavg(model_fn(initial_params()), SGD(0.1), weighted=False, batch_size=4)
    a, b = run_rounds(scaffold, CLIENTS, [[0, 1, 2, 3]]), run_rounds(fedavg, CLIENTS, [[0, 1, 2, 3]])
    assert_close(a.model_weights.trainable, [np.asarray(w, np.float64) for w in b.model_weights.trainable], atol=1e-7)


def test_needs_client_ids():
    process = build_scaffold(model_fn(initial_params()), 4, client_learning_rate=0.1, batch_size=4)
    with pytest.raises(ProcessError, match="client_ids"):
        process.next(process.initialize(), datasets(CLIENTS))
