"""from_keras_model: losses, several outputs with loss weights, batch formats, Keras metrics."""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.models import KerasModelError
from fedsim.learning import ClientWork
from fedsim.metrics import sum_then_finalize


def _two_output_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    a = keras.layers.Dense(1, name="a")(inputs)
    b = keras.layers.Dense(1, name="b")(inputs)
    return keras.Model(inputs, [a, b])


def test_several_outputs_with_loss_weights():
    model = _two_output_model()
    spec = (tf.TensorSpec([None, 3], tf.float32),
            (tf.TensorSpec([None, 1], tf.float32), tf.TensorSpec([None, 1], tf.float32)))
    fed_model = fedsim.from_keras_model(
        model, [keras.losses.MeanSquaredError(), keras.losses.MeanAbsoluteError()], spec,
        loss_weights=[0.25, 2.0])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y1, y2 = (rng.normal(size=(5, 1)).astype(np.float32) for _ in range(2))
    output = fed_model.forward_pass((x, (y1, y2)))
    (k_a, b_a), (k_b, b_b) = [[v.numpy() for v in layer.trainable_variables] for layer in model.layers[1:]]
    want = 0.25 * np.mean((x @ k_a + b_a - y1) ** 2) + 2.0 * np.mean(np.abs(x @ k_b + b_b - y2))
    assert float(output.loss) == pytest.approx(want, rel=1e-5)
    assert int(output.num_examples) == 5


def test_mapping_batches_and_keras_metrics_finalize_on_summed_state():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    spec = collections.OrderedDict(x=tf.TensorSpec([None, 4], tf.float32), y=tf.TensorSpec([None], tf.int32))
    fed_model = fedsim.from_keras_model(
        model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc"),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    assert list(fed_model.metric_finalizers()) == ["loss", "num_examples", "num_batches", "acc", "top2"]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30).astype(np.int32)
    work = ClientWork(fed_model)
    weights = fedsim.ModelWeights.from_model(fed_model)
    halves = [collections.OrderedDict(x=x[:10], y=y[:10]), collections.OrderedDict(x=x[10:], y=y[10:])]
    metrics = sum_then_finalize(fed_model.metric_finalizers())(
        [work.evaluate(weights, tf.data.Dataset.from_tensor_slices(h).batch(7)) for h in halves])
    logits = x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy()
    assert metrics["acc"] == pytest.approx(np.mean(np.argmax(logits, 1) == y), abs=1e-6)
    top2 = np.argsort(-logits, axis=1)[:, :2]
    assert metrics["top2"] == pytest.approx(np.mean([y[i] in top2[i] for i in range(30)]), abs=1e-6)
    assert metrics["num_batches"] == 2 + 3


def test_wrapping_errors():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    spec = (tf.TensorSpec([None, 4]), tf.TensorSpec([None], tf.int32))
    with pytest.raises(KerasModelError, match="loss must be a callable"):
        fedsim.from_keras_model(model, "mse", spec)
    with pytest.raises(KerasModelError, match="loss_weights has 2 entries but there are 1 losses"):
        fedsim.from_keras_model(model, keras.losses.MeanSquaredError(), spec, loss_weights=[1, 2])
    with pytest.raises(KerasModelError, match="metrics must be keras.metrics.Metric instances"):
        fedsim.from_keras_model(model, keras.losses.MeanSquaredError(), spec, metrics=["accuracy"])
    with pytest.raises(KerasModelError, match="expected a keras.Model"):
        fedsim.from_keras_model(object(), keras.losses.MeanSquaredError(), spec)
    with pytest.raises(KerasModelError, match=r"input_spec must describe a whole batch, \(x_spec, y_spec\)"):
        fedsim.from_keras_model(model, keras.losses.MeanSquaredError(), tf.TensorSpec([None, 4]))
    with pytest.raises(KerasModelError, match="input_spec must describe a whole batch"):
        fedsim.from_keras_model(model, keras.losses.MeanSquaredError(), {"features": tf.TensorSpec([None, 4])})
    fed_model = fedsim.from_keras_model(model, keras.losses.MeanSquaredError(), spec)
    with pytest.raises(KerasModelError, match="needs keys 'x' and 'y'"):
        fed_model.forward_pass({"features": np.zeros((1, 4), np.float32)})
