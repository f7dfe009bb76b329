"""The Ray column of the conformance matrix: every algorithm on a local Ray instance equals
the sequential executor after 3 rounds (model weights, server and client state, metrics).

Ray runs the same client step (``ClientWork``) in its actors, so it runs every algorithm,
extras and per-client inputs included. One private local instance serves the module.
"""
import os

import numpy as np
import pytest

from fedsim.execution import SequentialExecutor
from tests.conformance import cases
from tests.conformance.cases import ALGORITHMS, MODELS, RAGGED_SIZES, flat_state, population, run

ray = pytest.importorskip("ray")
from fedsim.execution.ray_executor import RayExecutor  # noqa: E402

# One worker runs every module that starts Ray (pytest-xdist), one module at a time.
pytestmark = pytest.mark.xdist_group("ray")

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray.cloudpickle.register_pickle_by_value(cases)  # actors build the models without the tests package


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# Every algorithm on the logistic regression; FedAvg and SCAFFOLD also on the model with
# BatchNormalization and Dropout, whose masks each actor draws from the client's seed, and
# FedAvg under each rule for its BatchNorm statistics.
CASES = [(a, "logreg", "keep") for a in sorted(ALGORITHMS)] + [
    ("fedavg", "mlp_bn_dropout", "keep"), ("scaffold", "mlp_bn_dropout", "keep"),
    ("fedavg", "mlp_bn_dropout", "average"), ("fedavg", "mlp_bn_dropout", "per_client"),
]


@pytest.mark.filterwarnings("ignore:layers .* keep batch statistics")
@pytest.mark.parametrize("algorithm, model, non_trainable", CASES)
def test_ray_equals_sequential(local_ray, algorithm, model, non_trainable):
    model_fn, features = MODELS[model]
    clients = population(RAGGED_SIZES, features, 3)
    ids = [f"client-{i}" for i in range(len(clients))]
    reference = ALGORITHMS[algorithm](model_fn, executor_fn=SequentialExecutor, non_trainable=non_trainable)
    expected_state, expected = run(reference, clients, 3)
    process = ALGORITHMS[algorithm](model_fn, executor_fn=RayExecutor.factory(model_fn, num_actors=2),
                                    non_trainable=non_trainable)
    try:
        state, results = run(process, clients, 3)
    finally:
        process.executor.shutdown()
    got, want = flat_state(process, state, ids), flat_state(reference, expected_state, ids)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    for result, reference_result in zip(results, expected):
        assert result.num_examples == reference_result.num_examples
        for name, value in reference_result.metrics.items():
            np.testing.assert_allclose(result.metrics[name], value, atol=1e-6, rtol=0)
