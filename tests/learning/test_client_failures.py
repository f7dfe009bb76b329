"""A client whose work fails is never counted as a success; under "raise" the first failure stops the run.

TensorFlow leaves a ``tf.function`` whose first trace raised after making a
variable a silent no-op that returns ``None`` (see ``fedsim.client.retrace``):
a client retried after such a failure must fail the same way again, or train
for real, and never pass for a client that trained on nothing.
"""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.client import ClientFailure, ClientWork
from fedsim.client.retrace import ClientFunction
from fedsim.execution import SequentialExecutor, VectorizedExecutor
from fedsim.learning.faults import FaultPolicy
from tests import logreg_reference as ref
from tests.models.test_legacy_model import BATCH, LR, _local_training_by_hand
from tests.models.toy_models import LegacyLinearRegression, LinearRegression, regression_clients

MINIMIZE_ERROR = r"AttributeError: .*'SGD' object has no attribute 'minimize'"


# Models ---------------------------------------------------------------------
class KerasTwoTutorialModel(LegacyLinearRegression):
    """TFF's old tutorial ``TrainableModel``: ``optimizer.minimize(loss, var_list)``, Keras 2's API.

    Keras 3 optimizers have no ``minimize``, so every trace of ``train_on_batch`` raises.
    """

    def __init__(self):
        super().__init__(LR)
        self._optimizer = keras.optimizers.SGD(learning_rate=LR)

    @tf.function
    def train_on_batch(self, batch):
        output = self.forward_pass(batch)
        self._optimizer.minimize(lambda: output.loss, var_list=self.trainable_variables)
        return output


class KerasTwoMetricModel(LinearRegression):
    """Its ``tf.function`` forward_pass makes a Keras metric on first use (variables), then calls
    Keras 2's ``reset_states`` (Keras 3: ``reset_state``): its first trace raises after making variables."""

    _tracker = None

    @tf.function
    def forward_pass(self, batch, training=True):
        if self._tracker is None:
            self._tracker = keras.metrics.Mean()
        self._tracker.reset_states()
        return LinearRegression.forward_pass(self, batch, training)


class PassingFaultModel(LinearRegression):
    """Its ``tf.function`` forward_pass makes a variable on first use (the last batch loss); its first
    trace then fails once (a passing fault, ``flaky``); every later trace is sound."""

    def __init__(self, flaky=True):
        super().__init__()
        self._flaky = flaky
        self._last_loss = None

    @tf.function
    def forward_pass(self, batch, training=True):
        output = LinearRegression.forward_pass(self, batch, training)
        if self._last_loss is None:
            self._last_loss = tf.Variable(0.0, trainable=False)
        self._last_loss.assign(output.loss)
        if self._flaky:
            self._flaky = False  # runs at trace time: only the first trace fails
            raise RuntimeError("passing fault in the first trace")
        return output


class PassingFault(keras.layers.Layer):
    """Identity; its first call inside a compiled function after ``arm()`` raises (a passing fault)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.faults = [False]

    def arm(self):
        self.faults[0] = True

    def call(self, x):
        if self.faults[0] and tf.inside_function():
            self.faults[0] = False
            raise RuntimeError("passing fault in the first trace")
        return x


def _keras_logreg(fault=None):
    keras.utils.set_random_seed(5)
    layers = [keras.Input((6,))] + ([fault] if fault is not None else []) + [keras.layers.Dense(3)]
    spec = (tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(
        keras.Sequential(layers), keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
        metrics=[keras.metrics.SparseCategoricalAccuracy()])


# Helpers --------------------------------------------------------------------
class ByClient:
    """An executor that trains each client with the client work its id names: one cohort, two models."""

    name = "by_client"

    def __init__(self, works):
        self.executors = {client_id: SequentialExecutor(work) for client_id, work in works.items()}
        self.calls = collections.Counter()

    def train(self, model_weights, datasets, inputs, client_ids):
        self.calls.update(client_ids)
        return [self.executors[c].train(model_weights, [d], [i], [c])[0]
                for d, i, c in zip(datasets, inputs, client_ids)]


class CountingExecutor(SequentialExecutor):
    """The sequential executor, counting the cohorts it is given."""

    calls = 0

    def train(self, *args, **kwargs):
        self.calls += 1
        return super().train(*args, **kwargs)


def _datasets(clients):
    return [tf.data.Dataset.from_tensor_slices(c) for c in clients]


def _fedavg_by_hand(clients):
    """One FedAvg round from zero weights, each client stepping SGD(LR) on the MSE (batch size BATCH)."""
    w0, b0 = np.zeros((2, 1)), np.zeros(1)
    trained = [_local_training_by_hand(w0, b0, c) for c in clients]
    counts = np.array([len(c["x"]) for c in clients], np.float64)
    share = counts / counts.sum()
    return (sum(s * (w - w0) for s, (w, _, _, _) in zip(share, trained)),
            sum(s * (b - b0) for s, (_, b, _, _) in zip(share, trained)))


# The tutorial model: its failure stays a failure -------------------------------
def test_tutorial_model_is_dropped_and_counted_never_a_success():
    good = regression_clients([5, 4], seed=1)
    bad = regression_clients([6], seed=2)[0]
    process = fedsim.build_fedavg(lambda: LegacyLinearRegression(LR), batch_size=BATCH,
                                  faults=FaultPolicy(client_retries=1, on_client_failure="drop"))
    executor = ByClient({"a": process.executor.client_work, "c": process.executor.client_work,
                         "bad": ClientWork(KerasTwoTutorialModel())})
    process.executor = executor
    result = process.next(process.initialize(), _datasets([good[0], bad, good[1]]), client_ids=["a", "bad", "c"])

    assert executor.calls == {"a": 1, "bad": 2, "c": 1}  # retried once, failed again
    assert result.measurements["faults/clients_dropped"] == 1
    assert result.measurements["faults/clients_retried"] == 1
    assert result.num_clients == 2 and result.metrics["num_examples"] == 9  # 5 + 4: nothing from "bad"
    kernel, bias = _fedavg_by_hand(good)
    np.testing.assert_allclose(result.state.model_weights.trainable[0], kernel, atol=1e-6)
    np.testing.assert_allclose(result.state.model_weights.trainable[1], bias, atol=1e-6)


def test_tutorial_model_fails_every_attempt_the_same_way():
    """A cohort where every client fails stops the run: with the retry failing as the first attempt did."""
    process = fedsim.build_fedavg(KerasTwoTutorialModel, batch_size=BATCH,
                                  faults=FaultPolicy(client_retries=1, on_client_failure="drop"))
    with pytest.raises(ClientFailure, match=r"client 'a' failed \(attempt 2\): " + MINIMIZE_ERROR) as raised:
        process.next(process.initialize(), _datasets(regression_clients([5, 9], seed=3)), client_ids=["a", "b"])
    assert isinstance(raised.value.error, AttributeError)


def test_raise_stops_at_the_first_failure_unretried_with_the_client_and_original_error():
    process = fedsim.build_fedavg(KerasTwoTutorialModel, batch_size=BATCH, executor_fn=CountingExecutor,
                                  faults=FaultPolicy(client_retries=3, on_client_failure="raise"))
    with pytest.raises(ClientFailure, match=r"client 'first' failed \(attempt 1\): " + MINIMIZE_ERROR) as raised:
        process.next(process.initialize(), _datasets(regression_clients([5, 9], seed=4)),
                     client_ids=["first", "second"])
    failure = raised.value
    assert failure.client_id == "first" and failure.attempts == 1
    assert isinstance(failure.error, AttributeError) and failure.__cause__ is failure.error
    assert process.executor.calls == 1  # client_retries=3 is unused under "raise"


def test_raise_names_the_first_failing_client_of_a_mixed_cohort():
    good = regression_clients([5], seed=5)[0]
    bad = regression_clients([6, 7], seed=6)
    process = fedsim.build_fedavg(lambda: LegacyLinearRegression(LR), batch_size=BATCH,
                                  faults=FaultPolicy(on_client_failure="raise"))
    failing = ClientWork(KerasTwoTutorialModel())
    process.executor = ByClient({"a": process.executor.client_work, "x": failing, "y": failing})
    with pytest.raises(ClientFailure, match=r"client 'x' failed \(attempt 1\): " + MINIMIZE_ERROR):
        process.next(process.initialize(), _datasets([good, *bad]), client_ids=["a", "x", "y"])
    assert process.executor.calls == {"a": 1, "x": 1, "y": 1}


# The root cause: a first trace that raised after making variables ---------------
def test_tensorflow_leaves_a_function_whose_first_trace_raised_a_silent_no_op():
    """The TensorFlow behaviour ``ClientFunction`` guards against (if this fails after a TensorFlow
    upgrade, TensorFlow fixed it, and ``fedsim.client.retrace`` can go)."""
    made = []

    def fails_once(x):
        if not made:
            made.append(tf.Variable(1.0))
            raise RuntimeError("first trace")
        return x + 1.0

    plain, guarded = tf.function(fails_once), ClientFunction(fails_once, model=None)
    with pytest.raises(RuntimeError, match="first trace"):
        plain(tf.constant(1.0))
    assert plain(tf.constant(1.0)) is None  # no error, no result: a no-op
    made.clear()
    with pytest.raises(RuntimeError, match="first trace"):
        guarded(tf.constant(1.0))
    assert float(guarded(tf.constant(1.0))) == 2.0


def test_a_retry_after_a_first_trace_that_made_variables_fails_the_same_way():
    work = ClientWork(KerasTwoMetricModel(), fedsim.SGD(LR))
    weights = fedsim.ModelWeights.from_model(work.model)
    dataset = _datasets(regression_clients([5], seed=7))[0].batch(BATCH)
    for _ in range(2):  # unguarded, the second attempt raised "'NoneType' object has no attribute 'loss'"
        with pytest.raises(AttributeError, match="'Mean' object has no attribute 'reset_states'"):
            work.train(weights, dataset)


def test_a_passing_fault_is_retried_to_exactly_the_clean_result():
    clients = regression_clients([5, 9, 4], seed=8)
    results = {}
    for flaky in (True, False):
        process = fedsim.build_fedavg(lambda: PassingFaultModel(flaky), fedsim.SGD(LR), batch_size=BATCH,
                                      executor_fn=SequentialExecutor)
        results[flaky] = process.next(process.initialize(), _datasets(clients), client_ids=["a", "b", "c"])
    flaky, clean = results[True], results[False]
    assert flaky.measurements["faults/clients_retried"] == 1  # "a"'s first attempt met the fault
    assert flaky.measurements["faults/clients_dropped"] == 0 and flaky.num_clients == 3
    for got, want in zip(flaky.state.model_weights.trainable, clean.state.model_weights.trainable):
        np.testing.assert_array_equal(got, want)
    assert flaky.metrics["loss"] == clean.metrics["loss"]
    kernel, bias = _fedavg_by_hand(clients)  # and the clean run is FedAvg's
    np.testing.assert_allclose(clean.state.model_weights.trainable[0], kernel, atol=1e-6)
    np.testing.assert_allclose(clean.state.model_weights.trainable[1], bias, atol=1e-6)


def test_evaluation_after_a_failed_first_trace_measures_for_real():
    """Evaluation ignores forward_pass's output, so a no-op forward_pass would report a loss of 0/0."""
    work, clean = ClientWork(PassingFaultModel(flaky=True)), ClientWork(PassingFaultModel(flaky=False))
    weights = fedsim.ModelWeights.from_model(work.model)
    dataset = _datasets(regression_clients([7], seed=9))[0].batch(BATCH)
    with pytest.raises(RuntimeError, match="passing fault"):
        work.evaluate(weights, dataset)
    got, want = work.evaluate(weights, dataset), clean.evaluate(weights, dataset)
    np.testing.assert_array_equal(got["loss"], want["loss"])
    assert want["loss"][1] == 7  # examples seen


@pytest.mark.parametrize("executor", ["sequential", "vectorized"])
def test_a_passing_fault_in_a_keras_model_gives_the_clean_result(executor, caplog):
    """The sequential executor's failed client is retried; the vectorized executor reruns its
    failed cohort client by client. Either way: the clean sequential result."""
    clients = ref.make_clients([7, 13, 5], 6, 3, seed=10)
    fault = PassingFault()
    executor_fn = {"sequential": SequentialExecutor, "vectorized": VectorizedExecutor}[executor]
    results = {}
    for name, layer, build_executor in [("flaky", fault, executor_fn), ("clean", None, SequentialExecutor)]:
        process = fedsim.build_fedavg(lambda: _keras_logreg(layer), fedsim.SGD(0.1), batch_size=4,
                                      executor_fn=build_executor)
        state = process.initialize()
        if layer is not None:
            layer.arm()
        with caplog.at_level("WARNING"):
            results[name] = process.next(state, _datasets(clients), client_ids=["a", "b", "c"])
    flaky, clean = results["flaky"], results["clean"]
    assert not fault.faults[0]
    if executor == "sequential":  # the fault fired in client "a"'s training
        assert flaky.measurements["faults/clients_retried"] == 1
    else:
        assert "cohort training failed (RuntimeError); running clients one by one" in caplog.text
    assert flaky.measurements["faults/clients_dropped"] == 0 and flaky.num_clients == 3
    for got, want in zip(flaky.state.model_weights.trainable, clean.state.model_weights.trainable):
        np.testing.assert_allclose(got, want, atol=1e-5)  # XLA (vectorized logreg): float rounding
    assert flaky.metrics["num_examples"] == clean.metrics["num_examples"] == 25
