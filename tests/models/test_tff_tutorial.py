"""TFF's old custom-model tutorial (``MnistModel`` / ``MnistTrainableModel``) runs on fedsim.

The model below is the tutorial's ("Federated Learning for Image Classification",
section "Customizing the model implementation", TFF 0.x, as in TFF's
``simple_fedavg_test.py``) with TFF's names replaced by fedsim's
(``tff.learning.Model`` -> ``fedsim.Model``, ``tff.federated_sum`` ->
``fedsim.federated_sum``; the aggregation is a plain function, as fedsim's
``federated_output_computation`` is) and one change for Keras 3: the tutorial's
``GradientDescentOptimizer(0.02).minimize(loss, var_list)``, made inside
``train_on_batch``, becomes a ``GradientTape`` and ``apply_gradients`` of a
``keras.optimizers.SGD(0.02)`` made once, in ``__init__``. A Keras 3 optimizer
holds variables (its iteration count, its learning rate), and a variable cannot
be made on every call of a ``tf.function``; fedsim refuses a per-call one when
the model is wrapped (``test_the_optimizer_made_inside_train_on_batch_is_refused``).

The model trains under FedAvg (its own ``train_on_batch``) and FedSGD (gradients
of ``forward_pass``, no optimizer), and its weights and aggregated metrics are
compared with softmax regression written in NumPy, float64 throughout.
"""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
import fedsim.algorithms
from fedsim.execution import SequentialExecutor
from fedsim.models.own_optimizers import HiddenStateError
from tests.logreg_reference import loss_and_gradient, softmax

CLIENT_LR, SERVER_LR, BATCH, ROUNDS = 0.02, 0.5, 5, 2
SIZES = [7, 12, 5, 9]  # partial last batches: 5+2, 5+5+2, 5, 5+4

# The tutorial's model -------------------------------------------------------------
MnistVariables = collections.namedtuple(
    'MnistVariables', 'weights bias num_examples loss_sum accuracy_sum')


def create_mnist_variables():
    return MnistVariables(
        weights=tf.Variable(
            lambda: tf.zeros(dtype=tf.float32, shape=(784, 10)),
            name='weights',
            trainable=True),
        bias=tf.Variable(
            lambda: tf.zeros(dtype=tf.float32, shape=(10)),
            name='bias',
            trainable=True),
        num_examples=tf.Variable(0.0, name='num_examples', trainable=False),
        loss_sum=tf.Variable(0.0, name='loss_sum', trainable=False),
        accuracy_sum=tf.Variable(0.0, name='accuracy_sum', trainable=False))


def mnist_forward_pass(variables, batch):
    y = tf.nn.softmax(tf.matmul(batch['x'], variables.weights) + variables.bias)
    predictions = tf.cast(tf.argmax(y, 1), tf.int32)

    flat_labels = tf.reshape(batch['y'], [-1])
    loss = -tf.reduce_mean(
        tf.reduce_sum(tf.one_hot(flat_labels, 10) * tf.math.log(y), axis=[1]))
    accuracy = tf.reduce_mean(
        tf.cast(tf.equal(predictions, flat_labels), tf.float32))

    num_examples = tf.cast(tf.size(batch['y']), tf.float32)

    variables.num_examples.assign_add(num_examples)
    variables.loss_sum.assign_add(loss * num_examples)
    variables.accuracy_sum.assign_add(accuracy * num_examples)

    return loss, predictions


def get_local_mnist_metrics(variables):
    return collections.OrderedDict([
        ('num_examples', variables.num_examples),
        ('loss', variables.loss_sum / variables.num_examples),
        ('accuracy', variables.accuracy_sum / variables.num_examples)
    ])


def aggregate_mnist_metrics_across_clients(metrics):
    return {
        'num_examples': fedsim.federated_sum(metrics.num_examples),
        'loss': fedsim.federated_mean(metrics.loss, metrics.num_examples),
        'accuracy': fedsim.federated_mean(metrics.accuracy, metrics.num_examples)
    }


class MnistModel(fedsim.Model):

    def __init__(self):
        self._variables = create_mnist_variables()

    @property
    def trainable_variables(self):
        return [self._variables.weights, self._variables.bias]

    @property
    def non_trainable_variables(self):
        return []

    @property
    def local_variables(self):
        return [
            self._variables.num_examples, self._variables.loss_sum,
            self._variables.accuracy_sum
        ]

    @property
    def input_spec(self):
        return collections.OrderedDict([('x', tf.TensorSpec([None, 784],
                                                            tf.float32)),
                                        ('y', tf.TensorSpec([None, 1], tf.int32))])

    @tf.function
    def forward_pass(self, batch, training=True):
        del training
        loss, predictions = mnist_forward_pass(self._variables, batch)
        return fedsim.BatchOutput(
            loss=loss,
            predictions=predictions,
            num_examples=tf.shape(predictions)[0])

    @tf.function
    def report_local_outputs(self):
        return get_local_mnist_metrics(self._variables)

    @property
    def federated_output_computation(self):
        return aggregate_mnist_metrics_across_clients


class MnistTrainableModel(MnistModel, fedsim.TrainableModel):

    def __init__(self):  # Keras 3: the optimizer holds variables, so it is made once
        super().__init__()
        self._optimizer = keras.optimizers.SGD(CLIENT_LR)

    @tf.function
    def train_on_batch(self, batch):
        with tf.GradientTape() as tape:
            output = self.forward_pass(batch)
        gradients = tape.gradient(output.loss, self.trainable_variables)
        self._optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return output


class OptimizerPerCall(MnistModel, fedsim.TrainableModel):
    """The tutorial's train_on_batch ported word for word: a Keras optimizer made on every call."""

    @tf.function
    def train_on_batch(self, batch):
        with tf.GradientTape() as tape:
            output = self.forward_pass(batch)
        gradients = tape.gradient(output.loss, self.trainable_variables)
        optimizer = keras.optimizers.SGD(CLIENT_LR)
        optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return output


# Synthetic "MNIST": sparse pixels in [0, 1), labels from a random linear teacher ----------
def make_clients(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(784, 10))
    clients = []
    for n in sizes:
        x = (rng.random((n, 784)) * (rng.random((n, 784)) < 0.2)).astype(np.float32)
        y = np.argmax(x @ teacher, axis=1).astype(np.int32).reshape(n, 1)
        clients.append(collections.OrderedDict(x=x, y=y))
    return clients


def datasets(clients):
    return [tf.data.Dataset.from_tensor_slices(c) for c in clients]


# The NumPy reference ----------------------------------------------------------------
class Pooled:
    """Example-weighted sums of loss and correct predictions over a round's batches."""

    def __init__(self):
        self.num_examples, self.loss_sum, self.correct = 0, 0.0, 0

    def add(self, weights, bias, x, y):
        """Adds a batch's metrics at (weights, bias); returns the batch's gradients."""
        loss, grad_w, grad_b = loss_and_gradient(weights, bias, x, y)
        self.num_examples += len(y)
        self.loss_sum += loss * len(y)
        self.correct += int(np.sum(np.argmax(softmax(x @ weights + bias), axis=1) == y))
        return grad_w, grad_b

    def metrics(self):
        n = self.num_examples
        return {'num_examples': n, 'loss': self.loss_sum / n, 'accuracy': self.correct / n}


def _as_float64(client):
    return client['x'].astype(np.float64), client['y'].reshape(-1)


def fedavg_reference(clients, rounds=ROUNDS):
    """Per round: (weights, bias) after it and the pooled metrics of its training batches."""
    weights, bias, history = np.zeros((784, 10)), np.zeros(10), []
    counts = np.array([len(c['y']) for c in clients], np.float64)
    for _ in range(rounds):
        pooled, deltas = Pooled(), []
        for client in clients:
            x, y = _as_float64(client)
            w, b = weights.copy(), bias.copy()
            for start in range(0, len(y), BATCH):
                # The batch's metrics are taken before its step, as train_on_batch does.
                grad_w, grad_b = pooled.add(w, b, x[start:start + BATCH], y[start:start + BATCH])
                w, b = w - CLIENT_LR * grad_w, b - CLIENT_LR * grad_b
            deltas.append((w - weights, b - bias))
        weights = weights + sum(n * dw for n, (dw, _) in zip(counts, deltas)) / counts.sum()
        bias = bias + sum(n * db for n, (_, db) in zip(counts, deltas)) / counts.sum()
        history.append((weights, bias, pooled.metrics()))
    return history


def fedsgd_reference(clients, rounds=ROUNDS):
    """FedSGD: w <- w - SERVER_LR * (example-weighted mean of each client's whole-data gradient)."""
    weights, bias, history = np.zeros((784, 10)), np.zeros(10), []
    for _ in range(rounds):
        pooled, gradients = Pooled(), []
        for client in clients:
            x, y = _as_float64(client)
            gradients.append((len(y), pooled.add(weights, bias, x, y)))
        total = sum(n for n, _ in gradients)
        weights = weights - SERVER_LR * sum(n * gw for n, (gw, _) in gradients) / total
        bias = bias - SERVER_LR * sum(n * gb for n, (_, gb) in gradients) / total
        history.append((weights, bias, pooled.metrics()))
    return history


def assert_round_matches(result, want_weights, want_bias, want_metrics):
    got_weights, got_bias = result.state.model_weights.trainable
    np.testing.assert_allclose(got_weights, want_weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_bias, want_bias, rtol=1e-5, atol=1e-7)
    assert_metrics_match(result.metrics, want_metrics)


def assert_metrics_match(got, want):
    assert set(got) == {'num_examples', 'loss', 'accuracy'}
    assert got['num_examples'] == want['num_examples']
    assert got['loss'] == pytest.approx(want['loss'], rel=1e-5)
    assert got['accuracy'] == pytest.approx(want['accuracy'], abs=1e-6)


def run(process, clients, rounds=ROUNDS):
    state, results = process.initialize(), []
    for _ in range(rounds):
        results.append(process.next(state, datasets(clients)))
        state = results[-1].state
    return results


# Tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model_fn", [
    MnistTrainableModel, lambda: fedsim.enhance(MnistTrainableModel()),
], ids=["tutorial", "enhanced"])
def test_federated_averaging_with_the_models_own_train_on_batch(model_fn):
    clients = make_clients()
    process = fedsim.build_fedavg(model_fn, batch_size=BATCH, executor_fn=SequentialExecutor)
    results = run(process, clients)
    reference = fedavg_reference(clients)
    for result, (weights, bias, metrics) in zip(results, reference):
        assert_round_matches(result, weights, bias, metrics)
    # Learning happened: the second round's model differs from the first's by more than rounding.
    assert not np.allclose(reference[0][0], reference[1][0], atol=1e-3)


def test_federated_sgd_takes_gradients_of_forward_pass():
    clients = make_clients(seed=1)
    process = fedsim.algorithms.build_fedsgd(
        MnistTrainableModel, server_optimizer=fedsim.SGD(SERVER_LR), executor_fn=SequentialExecutor)
    results = run(process, clients)
    for result, (weights, bias, metrics) in zip(results, fedsgd_reference(clients)):
        assert_round_matches(result, weights, bias, metrics)


def test_federated_evaluation_of_the_evaluation_model():
    """The tutorial evaluates the trained weights with the plain MnistModel."""
    clients = make_clients(seed=2)
    trained = run(fedsim.build_fedavg(MnistTrainableModel, batch_size=BATCH,
                                      executor_fn=SequentialExecutor), clients)[-1].state
    evaluation = fedsim.build_fedavg(MnistModel, batch_size=BATCH, executor_fn=SequentialExecutor)
    got = evaluation.evaluate(trained.model_weights, datasets(clients))

    weights, bias, _ = fedavg_reference(clients)[-1]
    pooled = Pooled()
    for client in clients:
        pooled.add(weights, bias, *_as_float64(client))
    assert_metrics_match(got, pooled.metrics())


def test_the_optimizer_made_inside_train_on_batch_is_refused():
    message = (r"OptimizerPerCall\.train_on_batch creates variable 'iteration'.*"
               r"hold the optimizer as an attribute of the model, created in __init__")
    with pytest.raises(HiddenStateError, match=message):
        fedsim.build_fedavg(OptimizerPerCall, batch_size=BATCH)
