"""Every algorithm x the in-process executors x both populations x three models: after 3 rounds
the model weights, every server and client state and the metrics equal the sequential
executor's; a model the batched executors cannot run is refused by name (and ``auto`` says so
in the log and runs sequentially)."""
import functools
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
    "sequential": SequentialExecutor,
    "vectorized": VectorizedExecutor,
    # The same device twice: the cohort is split in two shards, trained concurrently and merged
    # (test_multi_device.py places shards on two logical devices in a fresh process).
    "multi_device": lambda work: MultiDeviceExecutor(work, ["/device:CPU:0", "/device:CPU:0"]),
}


# Building a process (a Keras model and its traced client step) costs seconds, running one
# 3-round case far less: one process per (algorithm, executor, model) serves both
# populations, each under its own client ids so per-client state never mixes. The matrix
# runs in that order, so only the processes of the current algorithm and model stay alive.
@functools.lru_cache(maxsize=4)
def _process(algorithm, executor, model):
    return ALGORITHMS[algorithm](MODELS[model][0], executor_fn=EXECUTORS[executor])


def _run(algorithm, executor, model, sizes):
    process = _process(algorithm, executor, model)
    clients = population(POPULATIONS[sizes], MODELS[model][1], 3)
    ids = [f"{sizes}-{i}" for i in range(len(clients))]
    state, results = run(process, clients, ROUNDS, ids)
    return flat_state(process, state, ids), [r.metrics for r in results]


@functools.lru_cache(maxsize=8)
def _reference(algorithm, model, sizes):
    return _run(algorithm, "sequential", model, sizes)


# Every algorithm x three models x both populations on the vectorized executor; the
# multi-device executor (the same trainer, sharded) on the ragged population, for the
# logistic regression and the mlp. Grouped by (algorithm, model) for the caches above.
MATRIX = [
    (a, executor, s, m)
    for a in sorted(ALGORITHMS)
    for m in sorted(MODELS)
    for executor, s in [("vectorized", "equal"), ("vectorized", "ragged"), ("multi_device", "ragged")]
    if executor == "vectorized" or m != "cnn"
]


@pytest.mark.parametrize("algorithm, executor, sizes, model", MATRIX)
def test_executor_equals_sequential(algorithm, executor, sizes, model):
    got_state, got_metrics = _run(algorithm, executor, model, sizes)
    expected_state, expected_metrics = _reference(algorithm, model, sizes)
    assert len(got_state) == len(expected_state)
    for a, b in zip(got_state, expected_state):
        np.testing.assert_allclose(a, b, atol=TOLERANCE[model], rtol=0)
    for got, expected in zip(got_metrics, expected_metrics):
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=TOLERANCE[model], rtol=0)


def test_a_process_reused_for_another_population_equals_a_fresh_one():
    """The sharing above is sound: a process carries nothing from one population's run to the next."""
    fresh = ALGORITHMS["scaffold"](MODELS["mlp_bn_dropout"][0], executor_fn=VectorizedExecutor)
    clients = population(RAGGED_SIZES, MODELS["mlp_bn_dropout"][1], 3)
    ids = [f"ragged-{i}" for i in range(len(clients))]
    state, _ = run(fresh, clients, ROUNDS, ids)
    _run("scaffold", "vectorized", "mlp_bn_dropout", "equal")  # the shared process, used first elsewhere
    reused, _ = _run("scaffold", "vectorized", "mlp_bn_dropout", "ragged")
    for a, b in zip(reused, flat_state(fresh, state, ids)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_model_the_batched_executors_cannot_run_is_refused_by_name(algorithm, caplog):
    """A hand-written model has no stateless step: an explicit batched executor raises a named
    error; ``auto`` logs the reason once and runs sequentially."""
    for executor in (VectorizedExecutor, EXECUTORS["multi_device"]):
        with pytest.raises(VectorizationError, match="not a from_keras_model model.*use executor 'sequential'"):
            ALGORITHMS[algorithm](LinearRegression, executor_fn=executor)
    with caplog.at_level(logging.INFO, logger="fedsim.execution"):
        process = ALGORITHMS[algorithm](LinearRegression, executor_fn=lambda w: make_executor("auto", w))
    assert isinstance(process.executor, SequentialExecutor)
    said = [r.getMessage() for r in caplog.records if "executor 'auto' uses 'sequential'" in r.getMessage()]
    assert len(said) == 1 and "not a from_keras_model model" in said[0]
