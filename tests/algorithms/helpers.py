"""Shared fixtures: tiny logistic-regression clients and a Keras model with fixed initial weights."""
import keras
import numpy as np
import tensorflow as tf

import fedsim

SIZES = (5, 12, 20, 30)
NUM_FEATURES, NUM_CLASSES = 6, 3
IDS = ("a", "b", "c", "d")


def make_clients(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(n, NUM_FEATURES)).astype(np.float32), rng.integers(0, NUM_CLASSES, n).astype(np.int32))
        for n in sizes
    ]


def initial_params(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.3, (NUM_FEATURES, NUM_CLASSES)), rng.normal(0, 0.1, NUM_CLASSES)]


def model_fn(params=None, num_features=NUM_FEATURES, num_classes=NUM_CLASSES):
    """A fedsim model of logistic regression, its weights set to ``params`` (float32)."""

    def build():
        model = keras.Sequential([keras.Input((num_features,)), keras.layers.Dense(num_classes)])
        if params is not None:
            model.set_weights([np.asarray(p, np.float32) for p in params])
        spec = (tf.TensorSpec([None, num_features], tf.float32), tf.TensorSpec([None], tf.int32))
        return fedsim.from_keras_model(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec
        )

    return build


def datasets(clients):
    return [tf.data.Dataset.from_tensor_slices(c) for c in clients]


def as_float64(clients):
    return [(x.astype(np.float64), y) for x, y in clients]


def run_rounds(process, clients, cohorts, ids=IDS, state=None):
    """Runs one round per cohort (a list of client indices) from ``state``; returns the final state."""
    state = process.initialize() if state is None else state
    for cohort in cohorts:
        state = process.next(state, datasets([clients[i] for i in cohort]), [ids[i] for i in cohort]).state
    return state


def assert_close(actual, expected, atol=1e-5):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a, np.float64), e, atol=atol, rtol=0)
