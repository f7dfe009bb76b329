"""from_keras_model: losses, several outputs with loss weights, batch formats, Keras metrics."""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.models import KerasModelError
from fedsim.learning import ClientWork
from fedsim.execution import VectorizationError, VectorizedExecutor
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


# Named (dict) outputs.

SCORE_AND_LABEL_SPEC = (
    tf.TensorSpec([None, 3], tf.float32),
    {"score": tf.TensorSpec([None, 1], tf.float32), "label": tf.TensorSpec([None], tf.int32)},
)


def _named_outputs_model():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01))(inputs)
    return keras.Model(inputs, {"score": keras.layers.Dense(1)(hidden), "label": keras.layers.Dense(2)(hidden)})


def _named_batch(n, seed=5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)).astype(np.float32),
            {"score": rng.normal(size=(n, 1)).astype(np.float32), "label": rng.integers(0, 2, n).astype(np.int32)})


def _keras_loss(loss, loss_weights, x, y):
    """Keras's own total loss (weighted output losses plus regularization) on the same weights and batch."""
    reference = _named_outputs_model()
    reference.compile(loss=loss, loss_weights=loss_weights)
    return float(reference.compute_loss(x, y, reference(x)))


def test_named_outputs_loss_is_keras_loss_and_metrics_are_per_output():
    losses = {"score": keras.losses.MeanSquaredError(),
              "label": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
    fed_model = fedsim.from_keras_model(
        _named_outputs_model(), losses, SCORE_AND_LABEL_SPEC, loss_weights={"score": 0.5},
        metrics={"label": keras.metrics.SparseCategoricalAccuracy(name="acc"),
                 "score": [keras.metrics.MeanAbsoluteError(name="mae")]})
    assert fed_model.output_names == ["label", "score"]
    assert list(fed_model.metric_finalizers()) == ["loss", "num_examples", "num_batches", "label/acc", "score/mae"]
    work = ClientWork(fed_model)
    weights = fedsim.ModelWeights.from_model(fed_model)
    x, y = _named_batch(9)

    output = fed_model.forward_pass((x, y))
    assert set(output.predictions) == {"score", "label"}
    want = _keras_loss(losses, {"score": 0.5, "label": 1.0}, x, y)
    assert float(output.loss) == pytest.approx(want, rel=1e-6)

    metrics = sum_then_finalize(fed_model.metric_finalizers())(
        [work.evaluate(weights, tf.data.Dataset.from_tensor_slices((x, y)).batch(4))])
    predictions = {k: v.numpy() for k, v in fed_model.keras_model(x).items()}
    assert metrics["label/acc"] == pytest.approx(np.mean(np.argmax(predictions["label"], 1) == y["label"]), abs=1e-6)
    assert metrics["score/mae"] == pytest.approx(np.mean(np.abs(predictions["score"] - y["score"])), rel=1e-5)
    assert metrics["loss"] == pytest.approx(want, rel=1e-5)  # training=False: the same loss


def test_named_outputs_train_on_the_gradient_of_keras_loss():
    loss = keras.losses.MeanSquaredError()  # one loss for every output, as Keras's compile takes it
    y_spec = {"score": tf.TensorSpec([None, 1], tf.float32), "label": tf.TensorSpec([None, 2], tf.float32)}
    fed_model = fedsim.from_keras_model(_named_outputs_model(), loss, (SCORE_AND_LABEL_SPEC[0], y_spec),
                                        loss_weights={"label": 3.0})
    x, y = _named_batch(6)
    y = {"score": y["score"], "label": np.eye(2, dtype=np.float32)[y["label"]]}
    work = ClientWork(fed_model, fedsim.SGD(0.1))
    output = work.train(fedsim.ModelWeights.from_model(fed_model), tf.data.Dataset.from_tensors((x, y)))

    reference = _named_outputs_model()
    # Keras takes loss_weights only with a loss per output: the same loss, spelled out.
    reference.compile(loss={"score": loss, "label": loss}, loss_weights={"score": 1.0, "label": 3.0})
    with tf.GradientTape() as tape:
        total = reference.compute_loss(x, y, reference(x, training=True))
    gradients = tape.gradient(total, reference.trainable_variables)
    for delta, gradient in zip(output.delta, gradients):
        np.testing.assert_allclose(delta, -0.1 * gradient.numpy(), rtol=1e-5, atol=1e-7)
    assert float(output.metrics["loss"][0]) / 6 == pytest.approx(float(total), rel=1e-6)


def test_named_output_without_loss_keeps_its_metrics():
    fed_model = fedsim.from_keras_model(
        _named_outputs_model(), {"score": keras.losses.MeanSquaredError()}, SCORE_AND_LABEL_SPEC,
        metrics={"label": [keras.metrics.SparseCategoricalAccuracy(name="acc")]})
    x, y = _named_batch(7)
    output = fed_model.forward_pass((x, y))
    assert float(output.loss) == pytest.approx(
        _keras_loss({"score": keras.losses.MeanSquaredError()}, None, x, y), rel=1e-6)
    accuracy = np.mean(np.argmax(output.predictions["label"].numpy(), 1) == y["label"])
    assert fed_model.metric_finalizers()["label/acc"](fed_model.report_local_unfinalized_metrics()["label/acc"]) \
        == pytest.approx(accuracy, abs=1e-6)


def test_named_outputs_refusals_say_what_to_give():
    model, spec = _named_outputs_model(), SCORE_AND_LABEL_SPEC
    mse = keras.losses.MeanSquaredError()
    with pytest.raises(KerasModelError, match=r"outputs are named \['label', 'score'\]: give loss as a dict"):
        fedsim.from_keras_model(model, [mse, mse], spec)
    with pytest.raises(KerasModelError, match=r"loss names \['lable'\], which are not outputs of the model"):
        fedsim.from_keras_model(model, {"lable": mse}, spec)
    with pytest.raises(KerasModelError, match=r"give metrics as a dict keyed by these names"):
        fedsim.from_keras_model(model, mse, spec, metrics=[keras.metrics.MeanAbsoluteError()])
    with pytest.raises(KerasModelError, match=r"give loss_weights as a dict keyed by these names"):
        fedsim.from_keras_model(model, mse, spec, loss_weights=[1.0, 2.0])
    with pytest.raises(KerasModelError, match=r"loss_weights weighs outputs \['label'\], which have no loss"):
        fedsim.from_keras_model(model, {"score": mse}, spec, loss_weights={"label": 2.0})
    with pytest.raises(KerasModelError, match=r"labels in input_spec must be a dict with a spec for each output"):
        fedsim.from_keras_model(model, mse, (spec[0], (spec[1]["label"], spec[1]["score"])))
    with pytest.raises(KerasModelError, match=r"with a loss or metrics \(\['label', 'score'\]\)"):
        fedsim.from_keras_model(model, mse, (spec[0], {"score": spec[1]["score"]}))
    with pytest.raises(KerasModelError, match=r"loss is a dict \(keys \['a'\]\), but the model's outputs are not"):
        fedsim.from_keras_model(_two_output_model(), {"a": mse}, (spec[0], (spec[1]["score"],) * 2))
    fed_model = fedsim.from_keras_model(model, mse, (spec[0], {"score": spec[1]["score"], "label": spec[1]["score"]}))
    with pytest.raises(KerasModelError, match=r"labels must be a dict keyed by these names, got tuple"):
        fed_model.forward_pass((np.zeros((1, 3), np.float32), (np.zeros((1, 1)), np.zeros((1, 1)))))
    with pytest.raises(VectorizationError, match=r"outputs are named \['label', 'score'\]; only unnamed outputs"):
        VectorizedExecutor(ClientWork(fed_model))
