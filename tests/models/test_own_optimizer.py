"""A TrainableModel's own optimizer state starts afresh for every client (issue 15, item 2).

The model steps its own Keras SGD with momentum in ``train_on_batch``. Its
momentum must not flow from one client into the next: the result equals a
NumPy FedAvg in which every client's momentum starts at zero, and does not
depend on the order of the cohort. State fedsim cannot find is refused when
the model is wrapped, with an error that says how to write it.
"""
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.execution import SequentialExecutor
from fedsim.models import as_variable_model
from fedsim.models.own_optimizers import HiddenStateError
from tests.models.toy_models import LegacyLinearRegression, regression_clients

LR, MOMENTUM, BATCH, ROUNDS = 0.1, 0.9, 3, 2
SIZES = [5, 9, 4]  # partial last batches: 3+2, 3+3+3, 3+1


def _gradients(model, batch):
    with tf.GradientTape() as tape:
        output = model.forward_pass(batch)
    return output, tape.gradient(output.loss, model.trainable_variables)


class KerasMomentumRegression(LegacyLinearRegression):
    """Trains itself with its own Keras SGD with momentum, left unbuilt (fedsim builds it)."""

    def __init__(self):
        super().__init__()
        self._optimizer = keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM)

    def train_on_batch(self, batch):
        output, gradients = _gradients(self, batch)
        self._optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return output


class HandWrittenMomentum:
    """Keras SGD's momentum rule over tf.Variables; not a Keras optimizer, so fedsim cannot find it."""

    def __init__(self, variables):
        self.velocities = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    def apply(self, gradients, variables):
        for velocity, gradient, variable in zip(self.velocities, gradients, variables):
            velocity.assign(MOMENTUM * velocity - LR * gradient)
            variable.assign_add(velocity)


class HandWrittenMomentumRegression(LegacyLinearRegression):
    """Trains itself with a hand-written momentum optimizer whose state it does not list."""

    def __init__(self):
        super().__init__()
        self._optimizer = HandWrittenMomentum(self.trainable_variables)

    def train_on_batch(self, batch):
        output, gradients = _gradients(self, batch)
        self._optimizer.apply(gradients, self.trainable_variables)
        return output


class ListedHandWrittenMomentumRegression(HandWrittenMomentumRegression):
    """The same, written as the error says: the optimizer's variables are local variables."""

    local_variables = property(
        lambda self: [self._num_examples, self._loss_sum, self._max_loss, *self._optimizer.velocities])


class ModuleMomentum(tf.Module):
    """The hand-written optimizer as a tf.Module: its variables are found, but in no collection."""

    def __init__(self, variables):
        super().__init__()
        self.velocities = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    apply = HandWrittenMomentum.apply


class ModuleMomentumRegression(HandWrittenMomentumRegression):
    def __init__(self):
        LegacyLinearRegression.__init__(self)
        self._optimizer = ModuleMomentum(self.trainable_variables)


class OptimizerMadeInTrainOnBatch(LegacyLinearRegression):
    """Creates a Keras optimizer inside train_on_batch, where fedsim cannot find it before training."""

    def train_on_batch(self, batch):
        output, gradients = _gradients(self, batch)
        optimizer = keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM)
        optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return output


class OptimizerStateListedByTheModel(KerasMomentumRegression):
    """Builds its Keras optimizer itself and lists its variables as local variables."""

    def __init__(self):
        super().__init__()
        self._optimizer.build(self.trainable_variables)

    local_variables = property(
        lambda self: [self._num_examples, self._loss_sum, self._max_loss, *self._optimizer.variables])


# The reference: FedAvg written from scratch ----------------------------------------
def _client_momentum_sgd(w, b, client):
    """One client: Keras SGD's momentum rule (v = m v - lr g; w += v) from v = 0, MSE batch means."""
    x, y = client["x"].astype(np.float64), client["y"].astype(np.float64)
    velocity_w, velocity_b = np.zeros_like(w), np.zeros_like(b)
    for start in range(0, len(x), BATCH):
        xb, yb = x[start:start + BATCH], y[start:start + BATCH]
        residual = xb @ w + b - yb
        velocity_w = MOMENTUM * velocity_w - LR * 2 * xb.T @ residual / len(xb)
        velocity_b = MOMENTUM * velocity_b - LR * 2 * residual.mean(axis=0)
        w, b = w + velocity_w, b + velocity_b
    return w, b


def _fedavg_reference(clients, rounds):
    """Weights after ``rounds`` of FedAvg: example-weighted mean delta, server SGD(1.0)."""
    w, b = np.zeros((2, 1)), np.zeros(1)
    counts = np.array([len(c["x"]) for c in clients], np.float64)
    for _ in range(rounds):
        ends = [_client_momentum_sgd(w, b, c) for c in clients]
        w = w + sum(n * (cw - w) for n, (cw, _) in zip(counts, ends)) / counts.sum()
        b = b + sum(n * (cb - b) for n, (_, cb) in zip(counts, ends)) / counts.sum()
    return w, b


def _train(model_fn, clients, rounds=ROUNDS, executor_fn=SequentialExecutor):
    process = fedsim.build_fedavg(model_fn, batch_size=BATCH, executor_fn=executor_fn)
    state = process.initialize()
    for _ in range(rounds):
        state = process.next(state, [tf.data.Dataset.from_tensor_slices(c) for c in clients]).state
    return state.model_weights.trainable


# The model's own Keras optimizer ---------------------------------------------------
@pytest.mark.parametrize("model_fn", [
    KerasMomentumRegression,
    OptimizerStateListedByTheModel,
    ListedHandWrittenMomentumRegression,
    lambda: fedsim.enhance(KerasMomentumRegression()),
], ids=["keras-optimizer", "listed-by-the-model", "hand-written-listed", "enhanced"])
def test_every_client_starts_with_zero_momentum(model_fn):
    clients = regression_clients(SIZES, seed=5)
    w, b = _train(model_fn, clients)
    want_w, want_b = _fedavg_reference(clients, ROUNDS)
    np.testing.assert_allclose(w, want_w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, want_b, rtol=1e-6, atol=1e-6)


@pytest.mark.xdist_group("ray")  # one worker runs every test that starts Ray
def test_every_client_starts_with_zero_momentum_on_ray():
    """Each actor builds its own model from model_fn; two actors share three clients."""
    ray = pytest.importorskip("ray")
    from fedsim.execution.ray_executor import RayExecutor

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray workers cannot import the tests package: send the model's modules by value.
    for module in (sys.modules[__name__], sys.modules[LegacyLinearRegression.__module__]):
        ray.cloudpickle.register_pickle_by_value(module)
    executors = []

    def executor_fn(client_work):
        executors.append(RayExecutor.factory(KerasMomentumRegression, num_actors=2)(client_work))
        return executors[-1]

    clients = regression_clients(SIZES, seed=7)
    try:
        w, b = _train(KerasMomentumRegression, clients, executor_fn=executor_fn)
    finally:
        for executor in executors:
            executor.shutdown()
    want_w, want_b = _fedavg_reference(clients, ROUNDS)
    np.testing.assert_allclose(w, want_w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, want_b, rtol=1e-6, atol=1e-6)


def test_the_order_of_the_cohort_does_not_change_the_model():
    clients = regression_clients(SIZES, seed=6)
    forward = _train(KerasMomentumRegression, clients)
    backward = _train(KerasMomentumRegression, clients[::-1])
    for got, want in zip(backward, forward):
        # Only the summation order of the weighted mean differs.
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_the_optimizer_is_built_and_its_state_listed_once_as_local_variables():
    model = KerasMomentumRegression()
    adapted = as_variable_model(model)
    optimizer = model._optimizer
    assert optimizer.built  # slot variables exist before any tracing
    own = [v for v in adapted.local_variables if not any(v is u for u in model.local_variables)]
    assert {id(v) for v in own} == {id(v) for v in optimizer.variables}
    assert len(optimizer.variables) == 2 + 2  # iterations, learning rate, one momentum per weight

    listing = OptimizerStateListedByTheModel()
    assert len(as_variable_model(listing).local_variables) == len(listing.local_variables)
    fedsim.enhance(listing)  # no variable listed twice


# State fedsim cannot find is refused --------------------------------------------------
def test_a_hand_written_optimizer_whose_state_is_not_listed_is_refused():
    message = (r"variable 'Variable:0', held by HandWrittenMomentumRegression\._optimizer"
               r"\.velocities\[0\] \(inside a HandWrittenMomentum, .*\), is in none of trainable_variables, "
               r"non_trainable_variables, local_variables .* carry it from one client to the next"
               r".*keras\.optimizers\.Optimizer .* lists in local_variables")
    with pytest.raises(HiddenStateError, match=message):
        fedsim.build_fedavg(HandWrittenMomentumRegression, batch_size=BATCH)
    with pytest.raises(fedsim.models.ModelCheckError, match="HandWrittenMomentum"):
        fedsim.enhance(HandWrittenMomentumRegression())


def test_a_tf_module_optimizer_whose_state_is_not_listed_is_refused():
    message = r"held by ModuleMomentumRegression\._optimizer\.velocities\[0\], is in none of"
    with pytest.raises(HiddenStateError, match=message):
        as_variable_model(ModuleMomentumRegression())


def test_an_optimizer_made_inside_train_on_batch_is_refused_when_wrapped():
    message = (r"OptimizerMadeInTrainOnBatch\.train_on_batch creates variable 'iteration' "
               r".*hold the optimizer as an attribute of the model, created in __init__")
    with pytest.raises(HiddenStateError, match=message):
        as_variable_model(OptimizerMadeInTrainOnBatch())
