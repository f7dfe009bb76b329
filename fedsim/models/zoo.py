"""Built-in Keras 3 models the field benchmarks with."""
from __future__ import annotations

from typing import Optional, Sequence

import keras


def logistic_regression(num_features: int, num_classes: int) -> keras.Model:
    """Multinomial logistic regression: one dense layer producing logits."""
    return keras.Sequential([keras.Input((num_features,)), keras.layers.Dense(num_classes)])


def mlp(num_features: int, num_classes: int, hidden: Sequence[int] = (200, 200)) -> keras.Model:
    """Dense ReLU layers then a dense layer producing logits."""
    layers = [keras.Input((num_features,))]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers.append(keras.layers.Dense(num_classes))
    return keras.Sequential(layers)


def fedavg_cnn(
    num_classes: int = 62, input_shape: Sequence[int] = (28, 28, 1), data_shape: Optional[Sequence[int]] = None
) -> keras.Model:
    """The CNN of McMahan et al. 2017: two 5x5 conv + 2x2 max-pool blocks, dense 512, logits.

    ``input_shape`` is one image, ``(height, width, channels)``. ``data_shape``
    is one example as the data holds it (default: ``input_shape``); when it
    differs (LEAF's flat 784 floats for 28x28x1), a Reshape layer comes first,
    so the data and its element spec stay as they are.
    """
    L = keras.layers
    input_shape = tuple(input_shape)
    data_shape = input_shape if data_shape is None else tuple(data_shape)
    # Reshape has no variables: the model's weights are the same whichever shape the data has.
    reshape = [L.Reshape(input_shape)] if data_shape != input_shape else []
    return keras.Sequential([
        keras.Input(data_shape),
        *reshape,
        L.Conv2D(32, 5, padding="same", activation="relu"),
        L.MaxPooling2D(2, padding="same"),
        L.Conv2D(64, 5, padding="same", activation="relu"),
        L.MaxPooling2D(2, padding="same"),
        L.Flatten(),
        L.Dense(512, activation="relu"),
        L.Dense(num_classes),
    ])


def char_lstm(vocab_size: int = 86, sequence_length: int = 80, embedding_dim: int = 8,
              units: int = 256) -> keras.Model:
    """The Shakespeare next-character model of TFF's tutorials: embedding, 2 LSTMs, logits per step."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((sequence_length,), dtype="int32"),
        L.Embedding(vocab_size, embedding_dim),
        L.LSTM(units, return_sequences=True),
        L.LSTM(units, return_sequences=True),
        L.Dense(vocab_size),
    ])
