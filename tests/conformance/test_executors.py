"""Every algorithm x the in-process executors x both populations x three models: after 3 rounds
the model weights, every server and client state and the metrics equal the sequential
executor's; a model the batched executors cannot run is refused by name (and ``auto`` says so
in the log and runs sequentially)."""
import logging

import numpy as np
import pytest

from fedsim.execution import MultiDeviceExecutor, SequentialExecutor, VectorizationError, VectorizedExecutor
from fedsim.execution import make_executor
from tests.models.toy_models import LinearRegression
from tests.conformance.cases import (
    ALGORITHMS, EQUAL_SIZES, MODELS, RAGGED_SIZES, TOLERANCE, flat_state, population, run)

POPULATIONS = {"equal": EQUAL_SIZES, "ragged": RAGGED_SIZES}
ROUNDS = 3
EXECUTORS = {
    "vectorized": VectorizedExecutor,
    # The same device twice: the cohort is split in two shards, trained concurrently and merged
    # (test_multi_device.py places shards on two logical devices in a fresh process).
    "multi_device": lambda work: MultiDeviceExecutor(work, ["/device:CPU:0", "/device:CPU:0"]),
}
_references = {}


def _reference(algorithm, model, sizes):
    key = (algorithm, model, sizes)
    if key not in _references:
        model_fn, features = MODELS[model]
        clients = population(sizes, features, 3)
        process = ALGORITHMS[algorithm](model_fn, executor_fn=SequentialExecutor)
        state, results = run(process, clients, ROUNDS)
        ids = [f"client-{i}" for i in range(len(clients))]
        _references[key] = (flat_state(process, state, ids), [r.metrics for r in results])
    return _references[key]


# Every algorithm x both populations x three models on the vectorized executor; the
# multi-device executor (the same trainer, sharded) on the ragged population.
MATRIX = [(a, "vectorized", s, m) for a in sorted(ALGORITHMS) for s in sorted(POPULATIONS) for m in sorted(MODELS)]
MATRIX += [(a, "multi_device", "ragged", m) for a in sorted(ALGORITHMS) for m in ("logreg", "mlp_bn_dropout")]


@pytest.mark.parametrize("algorithm, executor, sizes, model", MATRIX)
def test_executor_equals_sequential(algorithm, executor, sizes, model):
    model_fn, features = MODELS[model]
    clients = population(POPULATIONS[sizes], features, 3)
    process = ALGORITHMS[algorithm](model_fn, executor_fn=EXECUTORS[executor])
    state, results = run(process, clients, ROUNDS)
    ids = [f"client-{i}" for i in range(len(clients))]
    expected_state, expected_metrics = _reference(algorithm, model, POPULATIONS[sizes])
    got = flat_state(process, state, ids)
    assert len(got) == len(expected_state)
    for a, b in zip(got, expected_state):
        np.testing.assert_allclose(a, b, atol=TOLERANCE[model], rtol=0)
    for result, expected in zip(results, expected_metrics):
        for name, value in expected.items():
            np.testing.assert_allclose(result.metrics[name], value, atol=TOLERANCE[model], rtol=0)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_model_the_batched_executors_cannot_run_is_refused_by_name(algorithm, caplog):
    """A hand-written model has no stateless step: an explicit batched executor raises a named
    error; ``auto`` logs the reason once and runs sequentially."""
    for executor in EXECUTORS.values():
        with pytest.raises(VectorizationError, match="not a from_keras_model model.*use executor 'sequential'"):
            ALGORITHMS[algorithm](LinearRegression, executor_fn=executor)
    with caplog.at_level(logging.INFO, logger="fedsim.execution"):
        process = ALGORITHMS[algorithm](LinearRegression, executor_fn=lambda w: make_executor("auto", w))
    assert isinstance(process.executor, SequentialExecutor)
    said = [r.getMessage() for r in caplog.records if "executor 'auto' uses 'sequential'" in r.getMessage()]
    assert len(said) == 1 and "not a from_keras_model model" in said[0]
