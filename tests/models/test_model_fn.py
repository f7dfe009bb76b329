"""build_model: a model_fn must return a new fedsim model on every call."""
import keras
import pytest
import tensorflow as tf

import fedsim
from fedsim.models.model_fn import ModelFnError, build_model
from tests.models.toy_models import LinearRegression

SPEC = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32))


def _keras():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_same_object_twice_is_refused():
    shared = LinearRegression()
    with pytest.raises(ModelFnError, match="returned the same model object twice"):
        build_model(lambda: shared)
    with pytest.raises(ModelFnError, match="returned the same model object twice"):
        fedsim.build_fedavg(lambda: shared)


def test_one_keras_model_wrapped_twice_is_refused():
    shared = _keras()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ModelFnError, match="share variables"):
        build_model(lambda: fedsim.from_keras_model(shared, loss, SPEC))


def test_a_bare_keras_model_or_a_non_model_is_refused():
    with pytest.raises(ModelFnError, match="returned a Keras model.*from_keras_model"):
        build_model(_keras)
    with pytest.raises(ModelFnError, match="returned dict"):
        build_model(lambda: {})
    with pytest.raises(ModelFnError, match="must be a callable"):
        build_model(LinearRegression())


def test_a_good_model_fn_passes():
    model = build_model(LinearRegression)
    assert isinstance(model, LinearRegression)
