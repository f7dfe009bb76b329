"""Where the Ray executor's clients come from: client sources, recipes, and the named refusals.

A population with a ``ClientSource`` (SQLite, arrays, generated) is rebuilt from it
alone; one without (a function's closure) cannot be built by the actors:
``client_data="actors"`` refuses it with ``NoClientSourceError``, ``"auto"`` ships
the data from the driver, says so once in the log, and gives the same numbers.
(That actor-built clients equal the sequential executor: tests/conformance/test_ray.py.)
"""
import logging
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.data.generated import seeded_population
from fedsim.data.sources import ClientRecipe, ClientSource, NoClientSourceError, RecipeStepError
from fedsim.execution import SequentialExecutor
from tests.conformance.cases import ALGORITHMS, MODELS, RAGGED_SIZES, flat_state, population

ray = pytest.importorskip("ray")
from fedsim.execution.ray_executor import RayExecutor  # noqa: E402
from tests.conformance.test_ray import private_ray, read_sqlite, simulate_on, write_sqlite  # noqa: E402
from tests.execution.test_ray_cluster import cluster  # noqa: E402, F401 (fixture)

# One worker runs every module that starts Ray (pytest-xdist), one module at a time.
pytestmark = pytest.mark.xdist_group("ray")

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MODEL_FN, FEATURES = MODELS["logreg"]
SQL_FEATURES = {"x": tf.TensorSpec([FEATURES], tf.float32), "y": tf.TensorSpec([], tf.int64)}


def arrays_population(seed=0):
    return fedsim.ClientData.from_tensor_slices(
        {f"a{i}": xy for i, xy in enumerate(population(RAGGED_SIZES * 2, FEATURES, 3, seed=seed))})


def closure_population(seed=0):
    """The same clients from a function: nothing says how another process could build them."""
    clients = dict(enumerate(population(RAGGED_SIZES * 2, FEATURES, 3, seed=seed)))
    return fedsim.ClientData.from_clients_and_tf_fn(
        [f"a{i}" for i in clients], lambda c: tf.data.Dataset.from_tensor_slices(clients[int(c[1:])]))


def make_examples(rng, position):
    return rng.normal(size=(3 + position, FEATURES)).astype(np.float32), rng.integers(0, 3, 3 + position)


def elements(dataset):
    return [tf.nest.map_structure(np.asarray, e) for e in dataset.as_numpy_iterator()]


def assert_same_clients(a, b):
    assert list(a.client_ids) == list(b.client_ids)
    for client_id in a.client_ids:
        for x, y in zip(elements(a.create_tf_dataset_for_client(client_id)),
                        elements(b.create_tf_dataset_for_client(client_id)), strict=True):
            tf.nest.map_structure(np.testing.assert_array_equal, x, y)


# Sources, without Ray -------------------------------------------------------------------------

def test_a_sqlite_population_is_rebuilt_from_its_source_alone(tmp_path):
    path = tmp_path / "population.sqlite"
    clients = {f"c{i}": {"x": x, "y": y.astype(np.int64)} for i, (x, y) in enumerate(population((3, 5), FEATURES, 3))}
    fedsim.data.write_sql_client_data(path, {"train": fedsim.ClientData.from_tensor_slices(clients)})
    data = fedsim.data.read_sql_client_data(path, "train", SQL_FEATURES)
    rebuilt = pickle.loads(pickle.dumps(data.client_source)).client_data()
    assert_same_clients(rebuilt, data)
    assert rebuilt.client_source == data.client_source


def test_arrays_and_generated_populations_are_rebuilt_with_their_preprocessing():
    double = arrays_population().preprocess(lambda d: d.map(lambda x, y: (2 * x, y)))
    assert_same_clients(double.client_source.client_data(), double)
    np.testing.assert_array_equal(  # the preprocessing ran once, not twice
        elements(double.client_source.client_data().create_tf_dataset_for_client("a0"))[0][0],
        2 * population(RAGGED_SIZES, FEATURES, 3)[0][0][0])
    generated = ClientSource(seeded_population, (5, make_examples, 3)).client_data()
    assert_same_clients(pickle.loads(pickle.dumps(generated.client_source)).client_data(),
                        seeded_population(5, make_examples, 3))


def test_a_population_built_by_a_function_or_split_has_no_source():
    assert closure_population().client_source is None
    train, test = arrays_population().split_by_clients(0.25, seed=0)
    assert train.client_source is None and test.client_source is None


def test_a_recipe_records_the_steps_and_the_element_spec_tf_data_gives():
    data = arrays_population()
    recipe = ClientRecipe.start(data.client_source, "a1", data.element_type_structure)
    dataset = data.create_tf_dataset_for_client("a1")
    for prepare in (lambda d: d.shuffle(8, seed=3).batch(4).repeat(2).take(5), lambda d: d.batch(3, drop_remainder=True)):
        assert prepare(recipe).element_spec == prepare(dataset).element_spec
    with pytest.raises(RecipeStepError, match="called Dataset.map.*records only shuffle, batch, repeat, take"):
        recipe.map(lambda x, y: (x, y))
    with pytest.raises(RecipeStepError, match="num_parallel_calls"):
        recipe.batch(4, num_parallel_calls=2)


# The executor's choice ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    with private_ray():
        yield


@pytest.fixture(scope="module")
def actors_only(local_ray):
    """A FedAvg process whose Ray executor demands actor-side data (one actor: the other CPU is
    for the ``"auto"`` processes)."""
    process = ALGORITHMS["fedavg"](MODEL_FN, executor_fn=RayExecutor.factory(MODEL_FN, num_actors=1, client_data="actors"))
    yield process
    process.executor.shutdown()


def simulate(process, data, **options):
    return fedsim.simulate(process, data, rounds=2, sampler=fedsim.UniformSampler(cohort_size=3, seed=2),
                           progress=False, **options)


def test_actors_refuse_a_population_without_a_source(actors_only):
    with pytest.raises(NoClientSourceError, match="client_data='actors'.*the population has no client source"):
        simulate(actors_only, closure_population())


def test_actors_refuse_a_client_dataset_fn(actors_only):
    data = arrays_population()
    with pytest.raises(NoClientSourceError, match="client_dataset_fn builds each client's dataset in the driver"):
        simulate(actors_only, data, client_dataset_fn=lambda c, r: data.create_tf_dataset_for_client(c))


def test_actors_refuse_a_preparation_a_recipe_cannot_record(actors_only):
    with pytest.raises(NoClientSourceError, match="called Dataset.map"):
        simulate(actors_only, arrays_population(), prepare_dataset_fn=lambda d, r, c: d.map(lambda x, y: (x, y)))


def test_actors_refuse_a_source_that_does_not_pickle(actors_only):
    lock = threading.Lock()
    data = arrays_population().with_client_source(ClientSource(lambda: (lock, arrays_population())[1]))
    with pytest.raises(NoClientSourceError, match="does not pickle"):
        simulate(actors_only, data)


def test_actors_refuse_datasets_built_in_the_driver(actors_only):
    clients = population(RAGGED_SIZES, FEATURES, 3)
    with pytest.raises(NoClientSourceError, match="datasets were built in the driver"):
        actors_only.next(actors_only.initialize(), [tf.data.Dataset.from_tensor_slices(c) for c in clients])


@pytest.mark.parametrize("make_data, built_by_actors", [(closure_population, False), (arrays_population, True)])
def test_auto_builds_in_the_actors_when_it_can_else_ships_and_says_so_once(
        local_ray, caplog, make_data, built_by_actors):
    reference = ALGORITHMS["fedavg"](MODEL_FN, executor_fn=SequentialExecutor)
    expected = simulate(reference, make_data(), eval_data=make_data(seed=1), eval_every=1)
    process = ALGORITHMS["fedavg"](MODEL_FN, executor_fn=RayExecutor.factory(MODEL_FN, num_actors=1))
    executor, train_stats = process.executor, []

    def train(*args):  # the stats of every training call (evaluation's come after them)
        outputs = RayExecutor.train(executor, *args)
        train_stats.append(executor.last_round_stats)
        return outputs

    executor.train = train
    try:
        with caplog.at_level(logging.INFO, logger="fedsim.execution"):
            result = simulate(process, make_data(), eval_data=make_data(seed=1), eval_every=1)
    finally:
        executor.shutdown()
    shipped = [r.getMessage() for r in caplog.records if "ships every client's data from the driver" in r.getMessage()]
    assert [s.built_by_actors for s in train_stats] == [3 if built_by_actors else 0] * 2
    if built_by_actors:
        assert shipped == []
    else:
        assert len(shipped) == 1 and "no client source" in shipped[0]
    ids = list(make_data().client_ids)
    for a, b in zip(flat_state(process, result.state, ids), flat_state(reference, expected.state, ids), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    for got, want in zip(result.history, expected.history, strict=True):
        for part in ("train", "eval"):
            assert got[part].keys() == want[part].keys()
            for name, value in want[part].items():
                np.testing.assert_allclose(got[part][name], value, atol=1e-6, rtol=0)


# On a two-node cluster -----------------------------------------------------------------------

def test_actors_on_a_two_node_cluster_read_a_sqlite_file_themselves(cluster, tmp_path):  # noqa: F811
    """One actor per node (1 CPU each) reads its clients from the file: the same numbers as in process."""
    address, env = cluster
    path, out = write_sqlite(tmp_path), tmp_path / "ray_result.npz"
    completed = subprocess.run(  # the driver joins in a process of its own (see test_ray_cluster.py)
        [sys.executable, "-m", "tests.execution.test_ray_sources", address, str(path), str(out)],
        env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    got = np.load(out)
    assert got["alive_nodes"] == 2 and got["num_actors"] == 2 and got["built_by_actors"] == 4
    reference = ALGORITHMS["fedavg"](MODEL_FN, executor_fn=SequentialExecutor)
    state, metrics = simulate_on(reference, read_sqlite(path), rounds=2)
    for i, array in enumerate(state.model_weights.trainable):
        np.testing.assert_allclose(got[f"trainable_{i}"], array, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["loss"], metrics[-1]["loss"], atol=1e-6, rtol=0)


def _simulate_on_cluster(address, path, out):
    executor_fn = RayExecutor.factory(MODEL_FN, address=address, client_data="actors")
    process = ALGORITHMS["fedavg"](MODEL_FN, executor_fn=executor_fn)
    with process.executor:
        state, metrics = simulate_on(process, read_sqlite(path), rounds=2)
        np.savez(
            out, alive_nodes=len([n for n in ray.nodes() if n["Alive"]]), num_actors=len(process.executor.actors),
            built_by_actors=process.executor.last_round_stats.built_by_actors, loss=metrics[-1]["loss"],
            **{f"trainable_{i}": a for i, a in enumerate(state.model_weights.trainable)})


if __name__ == "__main__":
    _simulate_on_cluster(*sys.argv[1:])
