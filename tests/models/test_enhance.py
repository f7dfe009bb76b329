"""enhance(): every check raises a clear error, and a sound model passes through."""
import collections

import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.models import EnhancedModel, EnhancedTrainableModel, ModelCheckError
from tests.models.toy_models import LegacyLinearRegression, LinearRegression


class SharedVariable(LinearRegression):
    local_variables = property(lambda self: [self._loss_sum, self._count, self._w])


class NoLoss(LinearRegression):
    def forward_pass(self, batch, training=True):
        return fedsim.BatchOutput(loss=None, predictions=self.predict_on_batch(batch["x"]))


class MismatchedMetrics(LinearRegression):
    def metric_finalizers(self):
        return collections.OrderedDict(mse=lambda v: v[0] / v[1])


def _batch(x_shape=(3, 2), x_dtype=np.float32):
    return collections.OrderedDict(x=np.zeros(x_shape, x_dtype), y=np.zeros((x_shape[0], 1), np.float32))


def test_variable_in_two_collections():
    with pytest.raises(ModelCheckError, match=r"variable 'w.*' appears in both trainable_variables and local_variables"):
        fedsim.enhance(SharedVariable())


def test_input_spec_that_is_not_tensor_specs():
    bad_spec = collections.OrderedDict(x=tf.TensorSpec([None, 2]), y=(None, 1))
    with pytest.raises(ModelCheckError, match="input_spec must be a nested structure of tf.TensorSpec"):
        fedsim.enhance(LinearRegression(input_spec=bad_spec))


def test_forward_pass_without_loss():
    model = fedsim.enhance(NoLoss())
    with pytest.raises(ModelCheckError, match="forward_pass returned BatchOutput without a loss"):
        model.forward_pass(_batch())


def test_metric_names_that_differ():
    with pytest.raises(ModelCheckError, match=r"only reported: \['loss'\], only finalized: \['mse'\]"):
        fedsim.enhance(MismatchedMetrics())


def test_batch_incompatible_with_input_spec_names_field_shape_dtype_and_spec():
    model = fedsim.enhance(LinearRegression())
    with pytest.raises(ModelCheckError) as error:
        model.forward_pass(_batch(x_shape=(3, 5)))
    message = str(error.value)
    assert "batch field 'x' has shape (3, 5) and dtype float32" in message
    assert "TensorSpec(shape=(None, 2), dtype=tf.float32" in message
    with pytest.raises(ModelCheckError, match="batch field 'x' has shape .* and dtype float64"):
        model.forward_pass(_batch(x_dtype=np.float64))
    with pytest.raises(ModelCheckError, match="structure does not match input_spec"):
        model.forward_pass((np.zeros((3, 2), np.float32),))


def test_sound_models_pass_and_expose_weights():
    model = fedsim.enhance(LinearRegression())
    assert type(model) is EnhancedModel
    model.trainable_variables[0].assign([[1.0], [2.0]])
    weights = model.weights
    assert isinstance(weights, fedsim.ModelWeights)
    np.testing.assert_array_equal(weights.trainable[0], [[1.0], [2.0]])
    output = model.forward_pass(_batch())
    assert float(output.loss) == pytest.approx(0.0)
    assert fedsim.enhance(model) is model

    trainable = fedsim.enhance(LegacyLinearRegression())
    assert isinstance(trainable, EnhancedTrainableModel)
    assert trainable.uses_federated_output_computation
