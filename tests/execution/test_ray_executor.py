"""RayExecutor against the in-process SequentialExecutor, and under faults.

One local Ray instance (2 CPUs) serves the module; every executor kills its
actors at teardown. Model functions are module-level and this module is pickled
by value, so Ray workers can build them without importing the tests package.
"""

import functools
import os
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.execution import SequentialExecutor
from fedsim.client import ClientTask, ClientWork
from fedsim.learning.faults import FaultPolicy

ray = pytest.importorskip("ray")
from fedsim.execution.ray_executor import ClientFailure, RayExecutor  # noqa: E402

# One worker runs every module that starts Ray (pytest-xdist), one module at a time.
pytestmark = pytest.mark.xdist_group("ray")

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NUM_FEATURES, NUM_CLASSES, BATCH, LR = 6, 3, 4, 0.1
SIZES = [7, 13, 4, 20, 9, 11]


def logreg_model_fn(pause_dir=None):
    """Logistic regression with fixed initial weights; with ``pause_dir``, a PauseOnSignal first."""
    layers = [keras.Input((NUM_FEATURES,))]
    if pause_dir is not None:
        layers.append(PauseOnSignal(pause_dir))
    layers.append(keras.layers.Dense(NUM_CLASSES))
    model = keras.Sequential(layers)
    rng = np.random.default_rng(42)
    model.layers[-1].set_weights(
        [
            rng.normal(size=(NUM_FEATURES, NUM_CLASSES)).astype(np.float32),
            np.zeros(NUM_CLASSES, np.float32),
        ]
    )
    spec = (tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(
        model,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        spec,
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )


class PauseOnSignal(keras.layers.Layer):
    """Identity; the first batch to find ``<dir>/pause`` claims it, writes its pid and sleeps.

    The sleep outlasts the test, so the actor running it is provably mid-task
    when the test kills it; every other batch (and every retry) passes through.
    """

    def __init__(self, pause_dir, **kwargs):
        super().__init__(**kwargs)
        self.pause_dir = pause_dir

    def call(self, x):
        y = tf.numpy_function(self._maybe_pause, [x], tf.float32, stateful=True)
        return tf.ensure_shape(y, x.shape)

    def _maybe_pause(self, x):
        try:  # rename is atomic: exactly one batch wins the claim
            os.rename(
                os.path.join(self.pause_dir, "pause"), os.path.join(self.pause_dir, "claimed")
            )
        except FileNotFoundError:
            return x
        Path(self.pause_dir, "paused_pid").write_text(str(os.getpid()))
        time.sleep(600)
        return x


def make_clients(sizes=SIZES, seed=1):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(size=(n, NUM_FEATURES)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, size=n).astype(np.int32),
        )
        for n in sizes
    ]


def datasets_of(clients):
    return [tf.data.Dataset.from_tensor_slices(c).batch(BATCH) for c in clients]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def executors(local_ray):
    built = []

    def make(model_fn, **options):
        executor = RayExecutor(model_fn, ClientTask(fedsim.SGD(LR)), num_actors=2, **options)
        built.append(executor)
        return executor

    yield make
    for executor in built:
        executor.shutdown()


def sequential_outputs(model_fn, clients, weights=None):
    work = ClientWork(model_fn(), fedsim.SGD(LR))
    weights = weights or fedsim.ModelWeights.from_model(work.model)
    return SequentialExecutor(work).train(weights, datasets_of(clients)), weights


def assert_outputs_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for a, b in zip(g.delta, w.delta):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert g.update_weight == w.update_weight and g.num_examples == w.num_examples
        for name in w.metrics:
            np.testing.assert_allclose(g.metrics[name], w.metrics[name], atol=1e-6)


ACTOR_EXECUTORS = ["vectorized", "sequential"]


@pytest.mark.parametrize("actor_executor", ACTOR_EXECUTORS)
def test_three_rounds_equal_the_sequential_executor(local_ray, actor_executor):
    clients = make_clients()
    data = fedsim.ClientData.from_tensor_slices({str(i): c for i, c in enumerate(clients)})
    results, processes = {}, {}
    for name, executor_fn in [
        ("sequential", None),
        ("ray", RayExecutor.factory(logreg_model_fn, num_actors=2, actor_executor=actor_executor)),
    ]:
        processes[name] = fedsim.build_fedavg(
            logreg_model_fn,
            client_optimizer=fedsim.SGD(LR),
            batch_size=BATCH,
            executor_fn=executor_fn,
        )
        sampler = fedsim.UniformSampler(cohort_size=4, seed=7)
        results[name] = fedsim.simulate(
            processes[name], data, rounds=3, sampler=sampler, progress=False
        )
    ray_executor = processes["ray"].executor
    try:
        want, got = results["sequential"], results["ray"]
        for a, b in zip(got.state.model_weights.trainable, want.state.model_weights.trainable):
            np.testing.assert_allclose(a, b, atol=1e-6)
        for got_round, want_round in zip(got.history, want.history):
            assert got_round["num_examples"] == want_round["num_examples"]
            for name, value in want_round["train"].items():
                np.testing.assert_allclose(got_round["train"][name], value, atol=1e-6)
        unbatched = [tf.data.Dataset.from_tensor_slices(c) for c in clients[:3]]  # evaluate batches
        evaluated = [
            p.evaluate(want.state.model_weights, unbatched)
            for p in (processes["ray"], processes["sequential"])
        ]
        for name, value in evaluated[1].items():
            np.testing.assert_allclose(evaluated[0][name], value, atol=1e-6)
        assert ray_executor.trains_cohorts == (actor_executor == "vectorized")
        # Each actor built its client work once; one client per task traces once, across all
        # rounds; a cohort share under XLA traces once per padded shape, and not again for it.
        if actor_executor == "sequential":
            assert ray_executor.trace_counts() == [1, 1]
        cohort = [data.create_tf_dataset_for_client(str(i)).batch(BATCH) for i in range(4)]
        ray_executor.train(want.state.model_weights, cohort)
        traces = ray_executor.trace_counts()
        ray_executor.train(want.state.model_weights, cohort)
        assert ray_executor.trace_counts() == traces and min(traces) >= 1
        stats = ray_executor.last_round_stats
        assert (stats.clients_retried, stats.failed_positions, stats.actor_deaths) == (0, (), 0)
        assert want.history[-1]["measurements"]["faults/clients_dropped"] == 0
    finally:
        ray_executor.shutdown()


@pytest.mark.parametrize("actor_executor", ACTOR_EXECUTORS)
def test_actor_killed_mid_round_reruns_its_clients(executors, tmp_path, actor_executor):
    """A killed actor's clients (its whole cohort share, when it trains one) run again on the other."""
    model_fn = functools.partial(logreg_model_fn, str(tmp_path))
    clients = make_clients()
    want, weights = sequential_outputs(model_fn, clients)
    executor = executors(model_fn, actor_executor=actor_executor)
    actor_by_pid = {ray.get(a.pid.remote()): a for a in executor.actors}
    (tmp_path / "pause").touch()

    def kill_the_paused_actor():
        pid_file = tmp_path / "paused_pid"
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.05)
        ray.kill(actor_by_pid[int(pid_file.read_text())])

    killer = threading.Thread(target=kill_the_paused_actor, daemon=True)
    killer.start()
    got = executor.train(weights, datasets_of(clients))
    killer.join(timeout=1)

    assert_outputs_equal(got, want)
    stats = executor.last_round_stats
    assert stats.actor_deaths == 1
    # One client per task: the paused one, maybe its queued successor; a share: all 3 of it.
    assert stats.clients_retried == 3 if actor_executor == "vectorized" else stats.clients_retried >= 1
    assert stats.failed_positions == ()
    assert all(isinstance(f.error, ray.exceptions.RayActorError) for f in stats.failures)
    # The next round starts with a replacement actor and runs without faults.
    assert_outputs_equal(executor.train(weights, datasets_of(clients)), want)
    assert len(executor.actors) == 2 and executor.last_round_stats.actor_deaths == 0


def bad_label_clients():
    clients = make_clients(SIZES[:4])
    x, y = clients[2]
    clients[2] = (x, np.full_like(y, NUM_CLASSES + 4))  # out of range: the loss raises
    return clients


@pytest.mark.parametrize("actor_executor", ACTOR_EXECUTORS)
def test_a_failing_client_yields_a_failure_record_at_once(executors, actor_executor):
    """The executor does not retry a client whose own work raised: the round's policy decides;
    the other clients of its actor's cohort share still train."""
    executor = executors(logreg_model_fn, max_retries=3, actor_executor=actor_executor)
    clients = bad_label_clients()
    want, weights = sequential_outputs(logreg_model_fn, [c for i, c in enumerate(clients) if i != 2])
    got = executor.train(weights, datasets_of(clients), client_ids=["a", "b", "c", "d"])
    failure = got[2]
    assert isinstance(failure, ClientFailure) and failure.client_id == "c" and failure.attempts == 1
    assert isinstance(failure.error, tf.errors.InvalidArgumentError)
    assert "client 'c'" in str(failure) and "label" in str(failure)
    assert_outputs_equal(got[:2] + got[3:], want)
    stats = executor.last_round_stats
    assert stats.failed_client_ids == ("c",) and stats.failed_positions == (2,)
    assert stats.clients_retried == 0 and [f.client_id for f in stats.failures] == ["c"]


@pytest.mark.parametrize("policy", ["drop", "raise"])
def test_fedavg_round_treats_a_failing_client_as_in_process(local_ray, policy):
    """The same [faults] settings give the same round on Ray and in process: retried, then dropped
    (counted); or raised at the first failure, unretried, with the client's id."""
    datasets = [tf.data.Dataset.from_tensor_slices(c) for c in bad_label_clients()]
    ids, results = ["a", "b", "c", "d"], {}
    faults = FaultPolicy(client_retries=1, on_client_failure=policy)
    for name, executor_fn in [
        ("sequential", None),
        ("ray", RayExecutor.factory(logreg_model_fn, num_actors=2)),
    ]:
        process = fedsim.build_fedavg(
            logreg_model_fn, fedsim.SGD(LR), batch_size=BATCH, executor_fn=executor_fn, faults=faults
        )
        try:
            if policy == "raise":
                with pytest.raises(ClientFailure) as raised:
                    process.next(process.initialize(), datasets, client_ids=ids)
                results[name] = (raised.value.client_id, raised.value.attempts)
            else:
                results[name] = process.next(process.initialize(), datasets, client_ids=ids)
        finally:
            if name == "ray":
                process.executor.shutdown()
    if policy == "raise":
        assert results["ray"] == results["sequential"] == ("c", 1)  # client_retries=1 is unused
        return
    trainable = {name: r.state.model_weights.trainable for name, r in results.items()}
    for got, want in zip(trainable["ray"], trainable["sequential"]):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert results["ray"].num_clients == results["sequential"].num_clients == 3
    for name in results:
        assert results[name].measurements["faults/clients_dropped"] == 1.0
        assert results[name].measurements["faults/clients_retried"] == 1.0


class PassingFaultRegression(fedsim.VariableModel):
    """y = x w + b (MSE); its ``tf.function`` forward_pass makes a variable on first use, then its
    first trace fails once, in each process that builds it: each actor's first client fails."""

    def __init__(self, flaky=True):
        self._w = tf.Variable(tf.zeros([NUM_FEATURES, 1]))
        self._b = tf.Variable(tf.zeros([1]))
        self._loss_sum = tf.Variable(0.0, trainable=False)
        self._count = tf.Variable(0.0, trainable=False)
        self._flaky, self._last_loss = flaky, None

    trainable_variables = property(lambda self: [self._w, self._b])
    non_trainable_variables = property(lambda self: [])
    local_variables = property(lambda self: [self._loss_sum, self._count])
    input_spec = property(lambda self: (tf.TensorSpec([None, NUM_FEATURES], tf.float32),
                                        tf.TensorSpec([None, 1], tf.float32)))

    def predict_on_batch(self, x, training=True):
        return tf.matmul(x, self._w) + self._b

    @tf.function
    def forward_pass(self, batch, training=True):
        x, y = batch
        loss = tf.reduce_mean(tf.square(self.predict_on_batch(x) - y))
        n = tf.shape(x)[0]
        self._loss_sum.assign_add(loss * tf.cast(n, tf.float32))
        self._count.assign_add(tf.cast(n, tf.float32))
        if self._last_loss is None:
            self._last_loss = tf.Variable(0.0, trainable=False)
        self._last_loss.assign(loss)
        if self._flaky:
            self._flaky = False  # at trace time: only the first trace fails
            raise RuntimeError("passing fault in the first trace")
        return fedsim.BatchOutput(loss=loss, num_examples=n)

    def report_local_unfinalized_metrics(self):
        return {"loss": [self._loss_sum, self._count]}

    def metric_finalizers(self):
        return {"loss": lambda v: v[0] / v[1]}

    def reset_metrics(self):
        self._loss_sum.assign(0.0)
        self._count.assign(0.0)


def test_a_passing_fault_is_retried_to_the_sequential_result_never_a_zero_update(local_ray):
    """A retried client on an actor whose first trace failed trains for real (TensorFlow would
    leave that trace's function a no-op: see fedsim.client.retrace)."""
    rng = np.random.default_rng(3)
    clients = [(rng.normal(size=(n, NUM_FEATURES)).astype(np.float32),
                rng.normal(size=(n, 1)).astype(np.float32)) for n in SIZES[:4]]
    datasets = [tf.data.Dataset.from_tensor_slices(c) for c in clients]
    results = {}
    for name, model_fn, executor_fn in [
        ("sequential", functools.partial(PassingFaultRegression, flaky=False), None),
        ("ray", PassingFaultRegression, RayExecutor.factory(PassingFaultRegression, num_actors=2)),
    ]:
        process = fedsim.build_fedavg(model_fn, fedsim.SGD(LR), batch_size=BATCH, executor_fn=executor_fn,
                                      faults=FaultPolicy(client_retries=1, on_client_failure="drop"))
        try:
            results[name] = process.next(process.initialize(), datasets, client_ids=["a", "b", "c", "d"])
        finally:
            if name == "ray":
                process.executor.shutdown()
    ray_result, want = results["ray"], results["sequential"]
    assert ray_result.measurements["faults/clients_retried"] >= 1  # each actor's first client
    assert ray_result.measurements["faults/clients_dropped"] == 0 and ray_result.num_clients == 4
    for got, expected in zip(ray_result.state.model_weights.trainable, want.state.model_weights.trainable):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert ray_result.metrics["loss"] == pytest.approx(want.metrics["loss"], rel=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_retries": -1}, "max_retries=-1 must be an integer >= 0"),
        ({"num_actors": 0}, "num_actors=0 must be a positive integer"),
        ({"actor_executor": "gpu"}, r"actor_executor='gpu' must be one of \['auto', 'vectorized', 'sequential'\]"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        RayExecutor(logreg_model_fn, **options)


def test_model_fn_that_does_not_pickle_is_refused():
    lock = threading.Lock()  # locks do not pickle
    with pytest.raises(TypeError, match="define model_fn at module level"):
        RayExecutor(lambda: lock)


def test_actors_vectorize_only_client_work_that_can_be(executors, caplog):
    """A model the vectorized executor cannot batch: "vectorized" names why and what to choose,
    "auto" trains one client per task and says why once."""
    with pytest.raises(fedsim.execution.VectorizationError,
                       match=r"actor_executor='vectorized', but .*PassingFaultRegression, not a from_keras_model.*actor_executor='sequential'"):
        executors(PassingFaultRegression, actor_executor="vectorized")
    with caplog.at_level("INFO", logger="fedsim.execution.ray_executor"):
        executor = executors(functools.partial(PassingFaultRegression, flaky=False))
    assert executor.trains_cohorts is False
    said = [r.getMessage() for r in caplog.records if "one client per task" in r.getMessage()]
    assert len(said) == 1 and "PassingFaultRegression" in said[0]


def test_a_cohort_share_sends_back_an_error_that_would_not_pickle_as_one_naming_it():
    from fedsim.execution.ray_worker import _picklable

    kept = ValueError("label 7 out of range")
    assert _picklable(kept) is kept

    class Unpicklable(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    sent = _picklable(Unpicklable())
    assert type(sent) is RuntimeError and str(sent) == "Unpicklable: holds a lock"
