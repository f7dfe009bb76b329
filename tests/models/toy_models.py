"""Hand-written models for tests: one per interface, no Keras."""
import collections

import numpy as np
import tensorflow as tf

import fedsim

SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None, 1], tf.float32))


class LinearRegression(fedsim.VariableModel):
    """y = x w + b with a mean squared error, in the current interface."""

    def __init__(self, input_spec=SPEC):
        self._w = tf.Variable(tf.zeros([2, 1]), name="w")
        self._b = tf.Variable(tf.zeros([1]), name="b")
        self._loss_sum = tf.Variable(0.0, trainable=False)
        self._count = tf.Variable(0.0, trainable=False)
        self._input_spec = input_spec

    trainable_variables = property(lambda self: [self._w, self._b])
    non_trainable_variables = property(lambda self: [])
    local_variables = property(lambda self: [self._loss_sum, self._count])
    input_spec = property(lambda self: self._input_spec)

    def predict_on_batch(self, x, training=True):
        return tf.matmul(x, self._w) + self._b

    def forward_pass(self, batch, training=True):
        predictions = self.predict_on_batch(batch["x"], training)
        loss = tf.reduce_mean(tf.square(predictions - batch["y"]))
        n = tf.shape(batch["x"])[0]
        self._loss_sum.assign_add(loss * tf.cast(n, tf.float32))
        self._count.assign_add(tf.cast(n, tf.float32))
        return fedsim.BatchOutput(loss=loss, predictions=predictions, num_examples=n)

    def report_local_unfinalized_metrics(self):
        return collections.OrderedDict(loss=[self._loss_sum, self._count])

    def metric_finalizers(self):
        return collections.OrderedDict(loss=lambda v: v[0] / v[1])

    def reset_metrics(self):
        self._loss_sum.assign(0.0)
        self._count.assign(0.0)


class LegacyLinearRegression(fedsim.TrainableModel):
    """The same model in the older interface: it trains itself and aggregates its own outputs."""

    def __init__(self, learning_rate=0.1):
        self._w = tf.Variable(tf.zeros([2, 1]), name="w")
        self._b = tf.Variable(tf.zeros([1]), name="b")
        self._num_examples = tf.Variable(0, dtype=tf.int32, trainable=False)
        self._loss_sum = tf.Variable(0.0, trainable=False)
        self._max_loss = tf.Variable(0.0, trainable=False)
        self._lr = learning_rate

    trainable_variables = property(lambda self: [self._w, self._b])
    non_trainable_variables = property(lambda self: [])
    local_variables = property(lambda self: [self._num_examples, self._loss_sum, self._max_loss])
    input_spec = property(lambda self: SPEC)

    def forward_pass(self, batch, training=True):
        predictions = tf.matmul(batch["x"], self._w) + self._b
        loss = tf.reduce_mean(tf.square(predictions - batch["y"]))
        n = tf.shape(batch["x"])[0]
        self._num_examples.assign_add(n)
        self._loss_sum.assign_add(loss * tf.cast(n, tf.float32))
        self._max_loss.assign(tf.maximum(self._max_loss, loss))
        return fedsim.BatchOutput(loss=loss, predictions=predictions, num_examples=n)

    def train_on_batch(self, batch):
        with tf.GradientTape() as tape:
            output = self.forward_pass(batch)
        for variable, gradient in zip(self.trainable_variables,
                                      tape.gradient(output.loss, self.trainable_variables)):
            variable.assign_sub(self._lr * gradient)
        return output

    def report_local_outputs(self):
        return collections.OrderedDict(
            num_examples=self._num_examples.read_value(),
            loss=self._loss_sum / tf.cast(self._num_examples, tf.float32),
            max_loss=self._max_loss.read_value(),
        )

    @property
    def federated_output_computation(self):
        def aggregate(local_outputs):
            return collections.OrderedDict(
                num_examples=fedsim.federated_sum(local_outputs.num_examples),
                loss=fedsim.federated_mean(local_outputs.loss, weight=local_outputs.num_examples),
                mean_client_loss=fedsim.federated_mean(local_outputs.loss),
                max_loss=fedsim.federated_max(local_outputs.max_loss),
                min_client_max_loss=fedsim.federated_min(local_outputs["max_loss"]),
            )

        return aggregate


def regression_clients(sizes, seed=0):
    rng = np.random.default_rng(seed)
    clients = []
    for n in sizes:
        x = rng.normal(size=(n, 2)).astype(np.float32)
        y = (x @ np.array([[1.5], [-2.0]]) + 0.5 + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
        clients.append(collections.OrderedDict(x=x, y=y))
    return clients
