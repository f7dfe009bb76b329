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


@pytest.mark.parametrize("on_disk", [False, True])
def test_replaying_a_round_from_an_older_state_reads_the_same_control_variates(on_disk, tmp_path):
    # What a resume from a checkpoint does: the killed run wrote control
    # variates for rounds 2 and 3; replaying round 2 must not see them.
    store = NpzClientStore(tmp_path / "cv") if on_disk else None
    process = build_scaffold(model_fn(initial_params()), 4, client_learning_rate=0.1, batch_size=4,
                             client_store=store)
    after_one = run_rounds(process, CLIENTS, COHORTS[:1])
    after_two = run_rounds(process, CLIENTS, COHORTS[1:2], state=after_one)
    run_rounds(process, CLIENTS, COHORTS[2:3], state=after_two)
    replayed = run_rounds(process, CLIENTS, COHORTS[1:2], state=after_one)
    for a, b in zip(replayed.model_weights.trainable, after_two.model_weights.trainable):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(replayed.algorithm_state["control_variate"], after_two.algorithm_state["control_variate"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("on_disk", [False, True])
def test_prune_keeps_the_newest_version_at_or_before_the_round(on_disk, tmp_path):
    from fedsim.learning.client_state import InMemoryClientStore

    store = NpzClientStore(tmp_path / "cv") if on_disk else InMemoryClientStore()
    for round_num in (1, 3, 5):
        store.put("a", [np.full(2, round_num, np.float32)], round_num)
    store.put("b", [np.zeros(2, np.float32)], 2)
    assert store.get("a", before_round=5)[0][0] == 3
    assert store.get("a")[0][0] == 5
    assert store.get("a", before_round=1) is None
    store.prune(4)  # a checkpoint of round 4 needs a@3 (and later); a@1 can go
    assert store.get("a", before_round=2) is None
    assert store.get("a", before_round=4)[0][0] == 3
    assert store.get("b", before_round=3) is not None
