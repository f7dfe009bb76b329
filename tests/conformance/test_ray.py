"""The Ray column of the conformance matrix: every algorithm on a local Ray instance equals
the sequential executor after 3 rounds (model weights, server and client state, metrics).

Ray runs the same client step in its actors, so it runs every algorithm, extras and
per-client inputs included: each actor trains its share of the cohort in one call (the
vectorized executor's, ``actor_executor="vectorized"``, what ``auto`` picks for these
models) or one client per task (``"sequential"``, the client work's own loop). Clients reach the actors either exported from the
driver (``process.next`` on datasets) or built by the actors from the population's
``ClientSource`` (``simulate`` on a SQLite file, a generated population, arrays), with the
round's seeded shuffle, batching, local epochs and stragglers applied there. One private
local instance (its own session folder, ``private_ray``) serves the module.
"""
import contextlib
import glob
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.client.seeds import client_seed
from fedsim.data.generated import seeded_population
from fedsim.data.sources import ClientSource
from fedsim.execution import SequentialExecutor
from fedsim.simulation.sampling import Stragglers
from tests.conformance import cases
from tests.conformance.cases import ALGORITHMS, MODELS, POPULATION_SIZE, RAGGED_SIZES, flat_state, population, run

ray = pytest.importorskip("ray")
from fedsim.execution.ray_executor import RayExecutor  # noqa: E402

# One worker runs every module that starts Ray (pytest-xdist), one module at a time.
pytestmark = pytest.mark.xdist_group("ray")

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Actors build the models and read the populations without the tests package.
ray.cloudpickle.register_pickle_by_value(cases)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@contextlib.contextmanager
def private_ray(num_cpus=2):
    """A local Ray instance of its own: its own session folder (ports are chosen free by Ray), so
    another instance on the machine cannot collide with it; Ray's own logs if it fails to start."""
    # Short: Ray's Unix sockets live in it, and their paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    try:
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     _temp_dir=temp_dir)
        except Exception as error:  # Ray's own account of why the node did not start
            logs = "".join(f"\n--- {path}\n{open(path, errors='replace').read()[-2000:]}"
                           for path in glob.glob(f"{temp_dir}/session_*/logs/*.err"))
            pytest.fail(f"ray.init failed: {error}{logs}")
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray():
    with private_ray():
        yield


# Every algorithm on the logistic regression; FedAvg and SCAFFOLD also on the model with
# BatchNormalization and Dropout, whose masks each actor draws from the client's seed, and
# FedAvg under each rule for its BatchNorm statistics.
CASES = [(a, "logreg", "keep") for a in sorted(ALGORITHMS)] + [
    ("fedavg", "mlp_bn_dropout", "keep"), ("scaffold", "mlp_bn_dropout", "keep"),
    ("fedavg", "mlp_bn_dropout", "average"), ("fedavg", "mlp_bn_dropout", "per_client"),
]
# Every case with cohort shares (the default); one client per task on a few.
ACTOR_CASES = [case + ("auto",) for case in CASES] + [
    ("fedavg", "logreg", "keep", "sequential"), ("scaffold", "mlp_bn_dropout", "keep", "sequential"),
    ("fedavg", "mlp_bn_dropout", "per_client", "sequential"),
]


def assert_same(process, state, metrics, reference, expected_state, expected_metrics, ids):
    got, want = flat_state(process, state, ids), flat_state(reference, expected_state, ids)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert len(metrics) == len(expected_metrics)
    for result, reference_result in zip(metrics, expected_metrics):
        assert result.keys() == reference_result.keys()
        for name, value in reference_result.items():
            np.testing.assert_allclose(result[name], value, atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:layers .* keep batch statistics")
@pytest.mark.parametrize("algorithm, model, non_trainable, actor_executor", ACTOR_CASES)
def test_ray_equals_sequential(local_ray, algorithm, model, non_trainable, actor_executor):
    model_fn, features = MODELS[model]
    clients = population(RAGGED_SIZES, features, 3)
    ids = [f"client-{i}" for i in range(len(clients))]
    reference = ALGORITHMS[algorithm](model_fn, executor_fn=SequentialExecutor, non_trainable=non_trainable)
    expected_state, expected = run(reference, clients, 3)
    executor_fn = RayExecutor.factory(model_fn, num_actors=2, actor_executor=actor_executor)
    process = ALGORITHMS[algorithm](model_fn, executor_fn=executor_fn, non_trainable=non_trainable)
    try:
        state, results = run(process, clients, 3)
        assert process.executor.trains_cohorts == (actor_executor == "auto")
    finally:
        process.executor.shutdown()
    for result, reference_result in zip(results, expected):
        assert result.num_examples == reference_result.num_examples
    assert_same(process, state, [r.metrics for r in results],
                reference, expected_state, [r.metrics for r in expected], ids)


# Clients built by the actors from the population's source ----------------------------------

FEATURES = MODELS["logreg"][1]


def make_examples(rng, position):
    """Client ``position`` of the generated population: ragged sizes, short last batches."""
    n = RAGGED_SIZES[position % len(RAGGED_SIZES)]
    return rng.normal(size=(n, FEATURES)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def as_xy(dataset):
    """SQLite examples are {"x", "y": int64}; the model takes (x, int32 y)."""
    return dataset.map(lambda e: (e["x"], tf.cast(e["y"], tf.int32)))


def write_sqlite(directory):
    """A SQLite file in TFF's format of ``POPULATION_SIZE`` ragged clients; its path."""
    clients = {f"c{i}": {"x": x, "y": y.astype(np.int64)}
               for i, (x, y) in enumerate(population(RAGGED_SIZES * 2, FEATURES, 3, seed=4))}
    path = directory / "population.sqlite"
    fedsim.data.write_sql_client_data(path, {"train": fedsim.ClientData.from_tensor_slices(clients)})
    return path


def read_sqlite(path):
    features = {"x": tf.TensorSpec([FEATURES], tf.float32), "y": tf.TensorSpec([], tf.int64)}
    return fedsim.data.read_sql_client_data(path, "train", features).preprocess(as_xy)


POPULATIONS = {
    "sqlite": lambda directory: read_sqlite(write_sqlite(directory)),
    "generated": lambda _: ClientSource(seeded_population, (POPULATION_SIZE, make_examples, 0)).client_data(),
    "arrays": lambda _: fedsim.ClientData.from_tensor_slices(
        {f"a{i}": xy for i, xy in enumerate(population(RAGGED_SIZES * 2, FEATURES, 3, seed=5))}),
}


def shuffled(dataset, round_num, client_id):
    """The run's seeded shuffle (as ``Experiment.client_dataset``): from (seed, round, client) alone."""
    return dataset.shuffle(16, seed=client_seed(7, round_num, client_id), reshuffle_each_iteration=True)


# Batches (fedavg), two local epochs (fednova), per-client state (scaffold), stragglers
# that run fewer epochs (fedprox), each on a population an actor reads by itself.
SOURCE_CASES = [
    ("sqlite", "fedavg", {}), ("sqlite", "scaffold", {}), ("generated", "fednova", {}),
    ("generated", "fedprox", {"local_epochs": 3, "stragglers": Stragglers(0.5, seed=3)}),
    ("arrays", "fedavg", {}), ("sqlite", "fedavg", {"actor_executor": "sequential"}),
]


def simulate_on(process, data, rounds=3):
    # A global seed unlike the one the actors' model_fn leaves them: the shuffles must follow the driver's.
    tf.random.set_seed(1234)
    result = fedsim.simulate(process, data, rounds=rounds, sampler=fedsim.UniformSampler(cohort_size=4, seed=1),
                             prepare_dataset_fn=shuffled, progress=False)
    return result.state, [r["train"] for r in result.history]


@pytest.mark.parametrize("kind, algorithm, options", SOURCE_CASES)
def test_clients_built_by_actors_equal_sequential(local_ray, tmp_path, kind, algorithm, options):
    data = POPULATIONS[kind](tmp_path)
    assert data.client_source is not None
    model_fn = MODELS["logreg"][0]
    options = dict(options)
    actor_executor = options.pop("actor_executor", "auto")
    reference = ALGORITHMS[algorithm](model_fn, executor_fn=SequentialExecutor, **options)
    expected_state, expected = simulate_on(reference, data)
    executor_fn = RayExecutor.factory(model_fn, num_actors=2, client_data="actors", actor_executor=actor_executor)
    process = ALGORITHMS[algorithm](model_fn, executor_fn=executor_fn, **options)
    try:
        state, metrics = simulate_on(process, data)
        stats = process.executor.last_round_stats
    finally:
        process.executor.shutdown()
    # The actors built every client; what the driver sent per client is a recipe, not the data.
    assert stats.built_by_actors == stats.num_clients > 0
    assert stats.sent_bytes < 2000 * stats.num_clients
    assert_same(process, state, metrics, reference, expected_state, expected, list(data.client_ids))


@pytest.mark.parametrize("kind", ["sqlite", "arrays"])
def test_evaluation_clients_built_by_actors_equal_sequential(local_ray, tmp_path, kind):
    """Evaluation clients travel as recipes too: the actors build them from the test
    population's source (a second source beside the training one) with the same metrics."""
    train, test = POPULATIONS["generated"](tmp_path), POPULATIONS[kind](tmp_path)
    model_fn = MODELS["logreg"][0]

    def evaluated(process):
        tf.random.set_seed(1234)
        result = fedsim.simulate(process, train, rounds=2, sampler=fedsim.UniformSampler(cohort_size=4, seed=1),
                                 eval_data=test, eval_every=1, progress=False)
        return [(r["eval"], r["eval_clients"]) for r in result.history]

    expected = evaluated(ALGORITHMS["fedavg"](model_fn, executor_fn=SequentialExecutor))
    process = ALGORITHMS["fedavg"](model_fn, executor_fn=RayExecutor.factory(model_fn, num_actors=2,
                                                                              client_data="actors"))
    try:
        got = evaluated(process)
        stats = process.executor.last_round_stats  # the last call: round 2's evaluation
    finally:
        process.executor.shutdown()
    assert stats.built_by_actors == stats.num_clients == len(test.client_ids)
    assert stats.sent_bytes < 2000 * stats.num_clients
    for (aggregate, distribution), (want_aggregate, want_distribution) in zip(got, expected):
        assert aggregate.keys() == want_aggregate.keys()
        for name, value in want_aggregate.items():
            np.testing.assert_allclose(aggregate[name], value, atol=1e-6, rtol=0)
        assert distribution.keys() == want_distribution.keys()
