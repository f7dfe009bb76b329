"""ModelWeights: a frozen value read from and written to fedsim and Keras models."""
import attrs
import keras
import numpy as np
import pytest

import fedsim
from fedsim.models import WeightsMismatchError
from tests.models.toy_models import LinearRegression


def test_round_trip_through_keras_and_fedsim_models():
    keras_model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1),
                                    keras.layers.BatchNormalization()])
    weights = fedsim.ModelWeights.from_model(keras_model)
    assert len(weights.trainable) == 4 and len(weights.non_trainable) == 2
    changed = weights.with_trainable([a + 1 for a in weights.trainable])
    changed.assign_weights_to(keras_model)
    np.testing.assert_array_equal(keras_model.layers[0].bias.numpy(), weights.trainable[1] + 1)

    model = LinearRegression()
    fedsim.ModelWeights([[[3.0], [4.0]], [5.0]], []).assign_weights_to(model)
    np.testing.assert_array_equal(model.trainable_variables[0].numpy(), [[3.0], [4.0]])


def test_is_frozen_and_copies_arrays():
    source = np.ones(3, np.float32)
    weights = fedsim.ModelWeights([source])
    source[0] = 7
    assert weights.trainable[0][0] == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        weights.trainable = ()
    trainable, non_trainable = weights.numpy()
    trainable[0][1] = 9
    assert weights.trainable[0][1] == 1 and non_trainable == []


def test_arithmetic_by_hand():
    a = fedsim.ModelWeights([np.array([1.0, 2.0], np.float32)], [np.array([4.0])])
    b = fedsim.ModelWeights([np.array([0.5, -1.0], np.float32)], [np.array([1.0])])
    np.testing.assert_array_equal((a + b).trainable[0], [1.5, 1.0])
    np.testing.assert_array_equal((a - b).non_trainable[0], [3.0])
    np.testing.assert_array_equal(a.scale(2).trainable[0], [2.0, 4.0])
    assert (a + b).trainable[0].dtype == np.float32
    assert a == fedsim.ModelWeights([np.array([1.0, 2.0])], [np.array([4.0])])


def test_mismatch_names_the_variable():
    model = LinearRegression()
    with pytest.raises(WeightsMismatchError, match=r"trainable variable 0 \(w.*\) has shape \(2, 1\), but the weights give shape \(3, 1\)"):
        fedsim.ModelWeights([np.zeros((3, 1)), np.zeros(1)]).assign_weights_to(model)
    with pytest.raises(WeightsMismatchError, match="1 trainable arrays do not fit a model with 2"):
        fedsim.ModelWeights([np.zeros((2, 1))]).assign_weights_to(model)
