"""Evaluation against Keras ``predict``: the same model and images, measured side by side (A B A B).

The workload is the shape of LEAF FEMNIST's pooled test set as issue 17 found
it: 184 writers, 4,088 images of 28x28 (flat 784 floats), 62 classes, the
FedAvg CNN. Images are random (speed does not depend on them). fedsim
evaluates every writer (sum-then-finalize loss and accuracy, one set of
unfinalized metrics per writer, so the per-writer distribution is there too);
Keras ``predict`` computes the logits of the pooled images, nothing else.

    python -m benchmarks.eval_speed [--pairs 5]

Prints the median seconds of each and their ratio (fedsim / Keras).
"""
from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import fedsim
from fedsim.simulation import evaluate_population

WRITERS, IMAGES, CLASSES = 184, 4088, 62


def cnn() -> keras.Model:
    """The FedAvg CNN over flat 784-float images (written here so older checkouts run it too)."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((784,)), L.Reshape((28, 28, 1)),
        L.Conv2D(32, 5, padding="same", activation="relu"), L.MaxPooling2D(2, padding="same"),
        L.Conv2D(64, 5, padding="same", activation="relu"), L.MaxPooling2D(2, padding="same"),
        L.Flatten(), L.Dense(512, activation="relu"), L.Dense(CLASSES),
    ])


def workload(seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(IMAGES - WRITERS, np.full(WRITERS, 1 / WRITERS)) + 1
    x = rng.random((IMAGES, 784), dtype=np.float32)
    y = rng.integers(0, CLASSES, IMAGES).astype(np.int32)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    clients = {f"w{i:03d}": (x[a:b], y[a:b]) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))}
    return x, y, fedsim.ClientData.from_tensor_slices(clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    x, y, test_data = workload()
    keras.utils.set_random_seed(0)
    keras_model = cnn()

    def model_fn():
        model = cnn()
        model.set_weights(keras_model.get_weights())
        return fedsim.from_keras_model(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            (tf.TensorSpec([None, 784], tf.float32), tf.TensorSpec([None], tf.int32)),
            metrics=[keras.metrics.SparseCategoricalAccuracy()])

    process = fedsim.build_fedavg(model_fn, batch_size=10)
    weights = process.initialize().model_weights
    evaluate_population(process, weights, test_data)  # traces
    keras_model.predict(x, batch_size=1024, verbose=0)
    fedsim_times, keras_times = [], []
    for _ in range(args.pairs):
        start = time.perf_counter()
        metrics, _ = evaluate_population(process, weights, test_data)
        fedsim_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        logits = keras_model.predict(x, batch_size=1024, verbose=0)
        keras_times.append(time.perf_counter() - start)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y))
    assert abs(metrics["sparse_categorical_accuracy"] - accuracy) < 1e-6, (metrics, accuracy)
    a, b = statistics.median(fedsim_times), statistics.median(keras_times)
    print(f"fedsim evaluate ({WRITERS} writers): {a:.3f} s  keras predict: {b:.3f} s  ratio: {a / b:.2f} "
          f"(medians of {args.pairs} pairs; same accuracy {accuracy:.4f})")


if __name__ == "__main__":
    main()
