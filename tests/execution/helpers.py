"""Small populations and a two-layer Keras model for executor tests."""
import keras
import numpy as np
import tensorflow as tf

import fedsim

NUM_FEATURES, NUM_CLASSES = 6, 3
EQUAL_SIZES = [8, 8, 8, 8, 8]
RAGGED_SIZES = [7, 13, 4, 20, 9]


def population(sizes, seed=0):
    """``{id: (x, y)}`` with float features and int labels."""
    rng = np.random.default_rng(seed)
    return {
        f"c{i}": (rng.normal(size=(n, NUM_FEATURES)).astype(np.float32),
                  rng.integers(0, NUM_CLASSES, size=n).astype(np.int32))
        for i, n in enumerate(sizes)
    }


def model_fn(seed=3):
    """Two Dense layers: both have variables named ``kernel`` and ``bias``."""

    def build():
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input((NUM_FEATURES,)),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(NUM_CLASSES),
        ])
        spec = (tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
        return fedsim.from_keras_model(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
            metrics=[keras.metrics.SparseCategoricalAccuracy()])

    return build
