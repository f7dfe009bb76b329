"""Keras metrics built at their first update, and metrics whose reset state is not zero, on every executor."""
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.client import ClientWork
from fedsim.client.keras_step import KerasClientStep
from fedsim.execution import SequentialExecutor, VectorizationError, VectorizedExecutor, make_executor
from fedsim.metrics import sum_then_finalize

EXECUTORS = {
    "sequential": SequentialExecutor,
    "vectorized_xla": partial(VectorizedExecutor, xla=True),
    "vectorized_loop": partial(VectorizedExecutor, xla=False),
}
LR, BATCH = 0.1, 4
LABELS = 3


def _clients(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 2, (n, LABELS)).astype(np.float32))
            for n in sizes]


def _datasets(clients):
    return [tf.data.Dataset.from_tensor_slices(c) for c in clients]


# AUC(multi_label=True) creates its variables at its first update_state.

def _multi_label_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(LABELS, activation="sigmoid")])


def _auc_model_fn():
    spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, LABELS], tf.float32))
    return fedsim.from_keras_model(_multi_label_model(), keras.losses.BinaryCrossentropy(), spec,
                                   metrics=[keras.metrics.AUC(multi_label=True, name="auc")])


def _keras_training_auc(clients):
    """Keras alone: AUC over every client's training-time predictions, pooled (SGD by hand from the same start)."""
    model, loss_fn = _multi_label_model(), keras.losses.BinaryCrossentropy()
    start = [v.numpy() for v in model.trainable_variables]
    auc = keras.metrics.AUC(multi_label=True)
    for x, y in clients:
        for variable, value in zip(model.trainable_variables, start):
            variable.assign(value)
        for i in range(0, len(x), BATCH):
            with tf.GradientTape() as tape:
                predictions = model(x[i:i + BATCH], training=True)
                loss = loss_fn(y[i:i + BATCH], predictions)
            auc.update_state(y[i:i + BATCH], predictions)
            for variable, gradient in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
                variable.assign_sub(LR * gradient)
    return float(auc.result())


def test_lazily_built_metric_has_variables_once_wrapped_and_finalizes_over_clients():
    fed_model = _auc_model_fn()
    auc_variables = fed_model.local_variables[4:]
    assert [tuple(v.shape) for v in auc_variables] == [(200, LABELS)] * 4
    assert not any(np.any(v.numpy()) for v in auc_variables)  # the building update had weight 0

    clients = _clients([3, 9, 6])
    work = ClientWork(fed_model)
    weights = fedsim.ModelWeights.from_model(fed_model)
    per_client = [work.evaluate(weights, tf.data.Dataset.from_tensor_slices(c).batch(BATCH)) for c in clients]
    aggregated = sum_then_finalize(fed_model.metric_finalizers())(per_client)

    pooled = keras.metrics.AUC(multi_label=True)
    for x, y in clients:
        pooled.update_state(y, fed_model.keras_model(x))
    assert aggregated["auc"] == pytest.approx(float(pooled.result()), rel=1e-6)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_lazily_built_metric_round_matches_keras_on_pooled_examples(executor):
    clients = _clients([5, 11, 7])
    process = fedsim.build_fedavg(_auc_model_fn, fedsim.SGD(LR), batch_size=BATCH, executor_fn=EXECUTORS[executor])
    result = process.next(process.initialize(), _datasets(clients), ["a", "b", "c"])
    assert result.metrics["auc"] == pytest.approx(_keras_training_auc(clients), rel=1e-5)
    assert int(result.metrics["num_examples"]) == 23


# A metric whose reset_state() does not set zeros.

class LabelMin(keras.metrics.Metric):
    """The smallest label seen; starts at 1e9 (set by reset_state, not by the zeros initializer)."""

    START = 1e9

    def __init__(self, name="label_min", honours_weights=True, **kwargs):
        super().__init__(name=name, **kwargs)
        self.honours_weights = honours_weights
        self.low = self.add_variable(shape=(), initializer="zeros", name="low")

    def reset_state(self):
        self.low.assign(self.START)

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = tf.reshape(tf.cast(y_true, self.dtype), [-1])
        if sample_weight is not None and self.honours_weights:
            values = tf.where(tf.reshape(sample_weight, [-1]) > 0, values, self.START)
        self.low.assign(tf.minimum(self.low, tf.reduce_min(values)))

    def result(self):
        return tf.convert_to_tensor(self.low)


def _label_min_model_fn(honours_weights=True):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 1], tf.float32))
    return fedsim.from_keras_model(model, keras.losses.MeanSquaredError(), spec,
                                   metrics=[LabelMin(honours_weights=honours_weights)])


def _regression_clients(sizes, seed=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n, 4)).astype(np.float32), rng.uniform(1.0, 5.0, (n, 1)).astype(np.float32))
            for n in sizes]


def test_non_zero_start_warns_when_wrapped_and_every_reset_returns_to_it():
    with pytest.warns(UserWarning, match=r"metric 'label_min' \(LabelMin\) does not start from zero"):
        fed_model = _label_min_model_fn()
    assert fed_model.local_variables[-1].numpy() == LabelMin.START
    (x, y), = _regression_clients([5])
    fed_model.forward_pass((x, y))
    assert fed_model.local_variables[-1].numpy() == y.min()
    fed_model.reset_metrics()
    assert fed_model.local_variables[-1].numpy() == LabelMin.START
    step = KerasClientStep(fed_model, ClientWork(fed_model).task)
    assert [float(v) for v in step.initial_metric_state()["label_min"]] == [LabelMin.START]


@pytest.mark.filterwarnings("ignore:metric 'label_min'")
@pytest.mark.parametrize("executor", EXECUTORS)
def test_each_client_starts_from_the_metrics_own_start_state(executor):
    clients = _regression_clients([6, 0, 9])  # the empty client reports the start state itself
    work = ClientWork(_label_min_model_fn(), fedsim.SGD(LR))
    weights = fedsim.ModelWeights.from_model(work.model)
    outputs = EXECUTORS[executor](work).train(
        weights, [tf.data.Dataset.from_tensor_slices(c).batch(BATCH) for c in clients])
    reported = [float(o.metrics["label_min"][0]) for o in outputs]
    assert reported == [clients[0][1].min(), LabelMin.START, clients[2][1].min()]


@pytest.mark.filterwarnings("ignore:metric 'label_min'")
def test_non_zero_start_round_sums_client_states_on_every_executor():
    clients = _regression_clients([6, 10, 3])
    rounds = {}
    for name, executor_fn in EXECUTORS.items():
        process = fedsim.build_fedavg(_label_min_model_fn, fedsim.SGD(LR), batch_size=BATCH, executor_fn=executor_fn)
        rounds[name] = process.next(process.initialize(), _datasets(clients), ["a", "b", "c"]).metrics
    # Sum-then-finalize (the documented rule): the cohort value is the sum of the clients' minima.
    expected = sum(float(y.min()) for _, y in clients)
    for metrics in rounds.values():
        assert metrics["label_min"] == pytest.approx(expected, rel=1e-6)
        assert metrics["loss"] == pytest.approx(rounds["sequential"]["loss"], rel=1e-5)


@pytest.mark.filterwarnings("ignore:metric 'label_min'")
def test_metric_that_counts_padded_examples_is_not_vectorized():
    work = ClientWork(_label_min_model_fn(honours_weights=False))
    with pytest.raises(VectorizationError, match=r"metric 'label_min' \(LabelMin\) changes its state on a padded"):
        VectorizedExecutor(work)
    assert make_executor("auto", work).name == "sequential"
