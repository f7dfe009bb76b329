"""Federated evaluation: aggregate over all examples, per-client spread, worst client, sampling."""
import numpy as np
import pytest

import fedsim
from fedsim.algorithms import build_fedavg
from fedsim.evaluation import evaluate_centralized, evaluate_federated
from tests.algorithms import reference as ref
from tests.algorithms.helpers import as_float64, initial_params, make_clients, model_fn

CLIENTS = make_clients()


def _setup():
    data = fedsim.ClientData.from_tensor_slices({f"c{i}": c for i, c in enumerate(CLIENTS)})
    return build_fedavg(model_fn(initial_params()), batch_size=4), data


def test_aggregate_and_distribution_match_numpy():
    process, data = _setup()
    result = evaluate_federated(process, process.initialize().model_weights, data)
    losses = np.array([ref.loss_and_gradient(initial_params(), x, y)[0] for x, y in as_float64(CLIENTS)])
    counts = np.array([len(y) for _, y in CLIENTS])
    assert result.aggregate["loss"] == pytest.approx(float(losses @ counts / counts.sum()), abs=1e-5)
    spread = result.distributions["loss"]
    assert spread.mean == pytest.approx(losses.mean(), abs=1e-5)
    assert spread.std == pytest.approx(losses.std(), abs=1e-5)
    assert spread.p50 == pytest.approx(np.percentile(losses, 50), abs=1e-5)
    assert spread.worst == pytest.approx(losses.max(), abs=1e-5)
    assert spread.worst_client == f"c{int(np.argmax(losses))}"
    assert result.per_client["c2"]["num_examples"] == 20


def test_sample_is_seeded_and_centralized_pools_examples():
    process, data = _setup()
    weights = process.initialize().model_weights
    first = evaluate_federated(process, weights, data, num_clients=2, seed=7)
    assert set(first.per_client) == set(evaluate_federated(process, weights, data, num_clients=2, seed=7).per_client)
    assert len(first.per_client) == 2
    pooled = evaluate_centralized(process, weights, data.create_tf_dataset_from_all_clients())
    assert pooled["loss"] == pytest.approx(evaluate_federated(process, weights, data).aggregate["loss"], abs=1e-5)
    with pytest.raises(ValueError, match="num_clients=5"):
        evaluate_federated(process, weights, data, num_clients=5)
