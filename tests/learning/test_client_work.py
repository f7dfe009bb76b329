"""Client work: traced once, no state carried between clients, empty clients count zero."""
import collections

import keras
import numpy as np
import tensorflow as tf

import fedsim
from fedsim.learning import ClientWork
from fedsim.execution import SequentialExecutor
from tests import logreg_reference as ref
from tests.models.toy_models import LinearRegression, regression_clients


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    spec = (tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                   spec, metrics=[keras.metrics.SparseCategoricalAccuracy()])


def test_traced_once_across_twenty_clients_of_different_sizes():
    work = ClientWork(_model(), fedsim.SGD(0.1))
    weights = fedsim.ModelWeights.from_model(work.model)
    clients = ref.make_clients(range(3, 23), seed=4)
    for x, y in clients:
        work.train(weights, tf.data.Dataset.from_tensor_slices((x, y)).batch(5))
    assert work.trace_count == 1


def test_same_client_gives_the_same_output_whatever_ran_before():
    work = ClientWork(_model(), fedsim.SGD(0.1, momentum=0.9))
    weights = fedsim.ModelWeights.from_model(work.model)
    (x1, y1), (x2, y2) = ref.make_clients([9, 17], seed=5)
    first = work.train(weights, tf.data.Dataset.from_tensor_slices((x1, y1)).batch(4))
    work.train(weights, tf.data.Dataset.from_tensor_slices((x2, y2)).batch(4))
    again = work.train(weights, tf.data.Dataset.from_tensor_slices((x1, y1)).batch(4))
    for a, b in zip(first.delta, again.delta):
        np.testing.assert_array_equal(a, b)
    for name in first.metrics:
        np.testing.assert_array_equal(first.metrics[name], again.metrics[name])


def test_metrics_are_reset_for_each_client():
    work = ClientWork(_model(), fedsim.SGD(0.0))
    weights = fedsim.ModelWeights.from_model(work.model)
    (x, y), = ref.make_clients([11], seed=6)
    for _ in range(2):
        output = work.train(weights, tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
        assert output.metrics["num_examples"] == [11]
        assert output.num_examples == 11 and output.update_weight == 11.0


def test_empty_client_has_zero_delta_and_zero_update_weight():
    for weighted in (True, False):
        work = ClientWork(_model(), fedsim.SGD(0.1), weighted=weighted)
        weights = fedsim.ModelWeights.from_model(work.model)
        empty = tf.data.Dataset.from_tensor_slices(
            (np.zeros((0, 6), np.float32), np.zeros((0,), np.int32))).batch(4)
        output = work.train(weights, empty)
        assert output.update_weight == 0.0
        assert all(not d.any() for d in output.delta)


def test_unweighted_client_counts_one():
    work = ClientWork(_model(), fedsim.SGD(0.1), weighted=False)
    weights = fedsim.ModelWeights.from_model(work.model)
    (x, y), = ref.make_clients([13], seed=8)
    assert work.train(weights, tf.data.Dataset.from_tensor_slices((x, y)).batch(4)).update_weight == 1.0


def test_every_variable_of_a_multilayer_model_is_federated():
    # Keras 3 names every Dense variable plainly "kernel" / "bias": keying by
    # name would collapse the layers onto one. Each must train and move.
    keras.utils.set_random_seed(1)
    spec = (tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None], tf.int32))

    def model_fn():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
        assert len({v.name for v in model.trainable_variables}) == 2
        return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(True), spec)

    process = fedsim.build_fedavg(model_fn, fedsim.SGD(0.1), batch_size=4)
    state = process.initialize()
    clients = ref.make_clients([12, 9], seed=9)
    new = process.next(state, [tf.data.Dataset.from_tensor_slices(c) for c in clients]).state
    assert len(new.model_weights.trainable) == 6
    for before, after in zip(state.model_weights.trainable, new.model_weights.trainable):
        assert np.abs(after - before).max() > 0


class _CountingModel(LinearRegression):
    """Adds a local step counter that ``reset_metrics`` does not touch, reported summed."""

    def __init__(self):
        super().__init__()
        self._steps = tf.Variable(0.0, trainable=False)

    local_variables = property(lambda self: [self._loss_sum, self._count, self._steps])

    def forward_pass(self, batch, training=True):
        self._steps.assign_add(1.0)
        return super().forward_pass(batch, training)

    def report_local_unfinalized_metrics(self):
        return collections.OrderedDict(loss=[self._loss_sum, self._count], steps=[self._steps])

    def metric_finalizers(self):
        return collections.OrderedDict(loss=lambda v: v[0] / v[1], steps=lambda v: v[0])


def test_every_local_variable_starts_each_client_from_its_initial_value():
    """3 clients of 3 batches: 9 steps per round, every round (not carried from client to client)."""
    process = fedsim.build_fedavg(_CountingModel, fedsim.SGD(0.01), batch_size=2, executor_fn=SequentialExecutor)
    clients = regression_clients([6, 5, 6])
    state = process.initialize()
    for _ in range(2):
        result = process.next(state, [tf.data.Dataset.from_tensor_slices(c) for c in clients])
        assert result.metrics["steps"] == 9.0
        state = result.state
