"""enhance(): every check raises a clear error, and a sound model passes through."""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.models import (
    EnhancedModel,
    EnhancedTrainableModel,
    KerasVariableModel,
    ModelCheckError,
    check_batch,
)
from fedsim.models.enhanced import WeightVariables
from fedsim.client import ClientWork
from tests.models.toy_models import SPEC, LegacyLinearRegression, LinearRegression, regression_clients

KERAS_SPEC = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 2], tf.float32))


# Hand-written models, each breaking (or keeping) one rule -----------------------
class SharedVariable(LinearRegression):
    local_variables = property(lambda self: [self._loss_sum, self._count, self._w])


class ListedTwice(LinearRegression):
    trainable_variables = property(lambda self: [self._w, self._b, self._w])


class TensorInCollection(LinearRegression):
    local_variables = property(lambda self: [self._loss_sum.read_value(), self._count])


class UnlistedStepCounter(LinearRegression):
    def __init__(self):
        super().__init__()
        self._steps = tf.Variable(0, name="steps")


class UnlistedInModule(LinearRegression):
    def __init__(self):
        super().__init__()
        self._head = tf.Module()
        self._head.scale = tf.Variable(1.0, name="head_scale")


class KerasMetricListed(LinearRegression):
    """Holds a Keras metric whose variables are listed as local variables."""

    def __init__(self):
        super().__init__()
        self._mean_loss = keras.metrics.Mean(name="mean_loss")

    local_variables = property(
        lambda self: [self._loss_sum, self._count, *self._mean_loss.variables])


class WithKerasOptimizer(LegacyLinearRegression):
    """Trains itself with a Keras optimizer, whose state belongs to no collection."""

    def __init__(self):
        super().__init__()
        self._optimizer = keras.optimizers.Adam(0.1)
        self._optimizer.build(self.trainable_variables)

    def train_on_batch(self, batch):
        with tf.GradientTape() as tape:
            output = self.forward_pass(batch)
        gradients = tape.gradient(output.loss, self.trainable_variables)
        self._optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return output


class WeightsWithoutStatistics(KerasVariableModel):
    """Treats only the trainable variables as weights: BatchNorm's statistics are left out."""

    non_trainable_variables = property(lambda self: [])


class ForgetsMetricState(KerasVariableModel):
    """Lists its own loss counters but not its Keras metrics' state."""

    local_variables = property(lambda self: [
        self._loss_sum, self._loss_count, self._num_examples, self._num_batches] + self.rng_state_variables)


class ForwardPassTrains(LinearRegression):
    def forward_pass(self, batch, training=True):
        output = super().forward_pass(batch, training)
        self._b.assign_sub([0.1])
        return output


class ForwardPassTracksMax(LinearRegression):
    """Writes a non-trainable weight (the largest feature seen) in every forward_pass."""

    def __init__(self):
        super().__init__()
        self._x_max = tf.Variable(0.0, trainable=False, name="x_max")

    non_trainable_variables = property(lambda self: [self._x_max])

    def forward_pass(self, batch, training=True):
        self._x_max.assign(tf.maximum(self._x_max, tf.reduce_max(batch["x"])))
        return super().forward_pass(batch, training)


class LegacyEvaluationModel(fedsim.Model):
    """The older interface without train_on_batch: y = x w, counting examples."""

    def __init__(self):
        self._w = tf.Variable(tf.ones([2, 1]), name="w")
        self._num_examples = tf.Variable(0, trainable=False, name="num_examples")

    trainable_variables = property(lambda self: [self._w])
    non_trainable_variables = property(lambda self: [])
    local_variables = property(lambda self: [self._num_examples])
    input_spec = property(lambda self: SPEC)

    def forward_pass(self, batch, training=True):
        predictions = tf.matmul(batch["x"], self._w)
        n = tf.shape(batch["x"])[0]
        self._num_examples.assign_add(n)
        loss = tf.reduce_mean(tf.square(predictions - batch["y"]))
        return fedsim.BatchOutput(loss=loss, predictions=predictions, num_examples=n)

    def report_local_outputs(self):
        return collections.OrderedDict(num_examples=self._num_examples.read_value())

    federated_output_computation = None


class NoLoss(LinearRegression):
    def forward_pass(self, batch, training=True):
        return fedsim.BatchOutput(loss=None, predictions=self.predict_on_batch(batch["x"]))


class MismatchedMetrics(LinearRegression):
    def metric_finalizers(self):
        return collections.OrderedDict(mse=lambda v: v[0] / v[1])


# Helpers --------------------------------------------------------------------------
def _batch(x_shape=(3, 2), x_dtype=np.float32, x_value=1.0):
    return collections.OrderedDict(
        x=np.full(x_shape, x_value, x_dtype), y=np.zeros((x_shape[0], 1), np.float32))


def _keras_batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)


def _batch_norm_dropout_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.5), keras.layers.Dense(2),
    ])


def _keras_model(model_class=KerasVariableModel, spec=KERAS_SPEC):
    """A Dense-BatchNorm-Dropout-Dense model wrapped as ``from_keras_model`` does."""
    return model_class(_batch_norm_dropout_model(), keras.losses.MeanSquaredError(), spec,
                       metrics=[keras.metrics.MeanAbsoluteError()])


# 1. Only variables in the collections ---------------------------------------------
def test_tensor_in_a_collection():
    message = (r"local_variables\[0\] is not a variable \(got EagerTensor\); "
               "list the tf.Variable itself")
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(TensorInCollection())


# 2. Each variable listed once -------------------------------------------------------
def test_variable_listed_twice_in_one_collection():
    message = "variable 'w:0' is listed twice in trainable_variables; list each variable once"
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(ListedTwice())


def test_variable_in_two_collections():
    message = r"variable 'w.*' appears in both trainable_variables and local_variables"
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(SharedVariable())


# 3. Every variable the model holds is in a collection -------------------------------
def test_variable_in_no_collection():
    message = (r"variable 'steps:0' \(held by UnlistedStepCounter._steps\) is in none of "
               "trainable_variables, non_trainable_variables, local_variables; it would drift")
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(UnlistedStepCounter())
    message = r"'head_scale:0' \(held by UnlistedInModule._head.scale\)"
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(UnlistedInModule())


def test_keras_state_in_no_collection():
    # Keras numbers layer names per process (sequential_7/...), so match the name's ending.
    message = (r"variable '[^']*batch_normalization[^']*/moving_mean' "
               r"\(held by WeightsWithoutStatistics._keras_model\) is in none")
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(_keras_model(WeightsWithoutStatistics))
    message = r"variable 'mean_absolute_error/total' \(held by ForgetsMetricState\..*\) is in none"
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(_keras_model(ForgetsMetricState))


def test_listed_metric_state_and_optimizer_state_are_not_flagged():
    fedsim.enhance(KerasMetricListed())
    model = fedsim.enhance(WithKerasOptimizer())
    model.train_on_batch(_batch())  # the optimizer's moments exist and hold values


# 4. forward_pass leaves the weights alone --------------------------------------------
def test_forward_pass_that_changes_a_trainable_variable():
    model = fedsim.enhance(ForwardPassTrains())
    for training in (True, False):
        message = (rf"forward_pass\(training={training}\) changed trainable variable 'b:0': "
                   "it would silently become part of the client's model update")
        with pytest.raises(ModelCheckError, match=message):
            model.forward_pass(_batch(), training=training)


def test_forward_pass_that_changes_a_non_trainable_variable_outside_training():
    model = fedsim.enhance(ForwardPassTracksMax())
    model.forward_pass(_batch(), training=True)  # allowed: an updated statistic, like BatchNorm's
    message = (r"forward_pass\(training=False\) changed non-trainable variable 'x_max:0': "
               "it would be silently discarded")
    with pytest.raises(ModelCheckError, match=message):
        model.forward_pass(_batch(x_value=5.0), training=False)


class WritesOnlyWhenTraced(LinearRegression):
    """Writes its bias only inside a traced function, where an eager check cannot see it."""

    def forward_pass(self, batch, training=True):
        output = super().forward_pass(batch, training)
        if not tf.executing_eagerly():
            self._b.assign_add([0.5])
        return output


def _one_client():
    (data,) = regression_clients([4])
    return tf.data.Dataset.from_tensor_slices(data).batch(2)


def test_forward_pass_that_writes_weights_inside_the_client_loop_fails_the_client():
    work = ClientWork(fedsim.enhance(WritesOnlyWhenTraced()), fedsim.SGD(0.1))
    weights = fedsim.ModelWeights.from_model(work.model)
    message = r"forward_pass\(training=True\) changed trainable variable .*b:0.*: it would silently become part"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        work.train(weights, _one_client())
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"forward_pass\(training=False\) changed trainable"):
        work.evaluate(weights, _one_client())
    # Unenhanced, the write goes unnoticed: the bias delta holds the two writes (2 batches x 0.5) too.
    plain = ClientWork(WritesOnlyWhenTraced(), fedsim.SGD(0.0))
    np.testing.assert_allclose(plain.train(weights, _one_client()).delta[1], [1.0])


def test_traced_checks_let_statistics_change_in_training_only():
    work = ClientWork(fedsim.enhance(ForwardPassTracksMax()), fedsim.SGD(0.1))
    weights = fedsim.ModelWeights.from_model(work.model)
    output = work.train(weights, _one_client())  # x_max may change with training=True
    assert output.num_examples == 4
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"changed non-trainable variable .*x_max:0"):
        work.evaluate(weights, _one_client())


def test_keras_batch_norm_and_dropout_update_only_in_training():
    model = fedsim.enhance(_keras_model())
    before = model.weight_values
    model.forward_pass(_keras_batch(), training=False)
    assert model.weight_values == before
    model.forward_pass(_keras_batch(), training=True)  # moving statistics and seed state advance
    after = model.weight_values
    assert all(np.array_equal(a, b) for a, b in zip(after.trainable, before.trainable))
    assert not all(np.array_equal(a, b) for a, b in zip(after.non_trainable, before.non_trainable))


# 5. input_spec has a batch dimension -------------------------------------------------
@pytest.mark.parametrize("y_spec", [tf.TensorSpec([], tf.float32), tf.TensorSpec(None, tf.float32)])
def test_input_spec_without_batch_dimension(y_spec):
    spec = collections.OrderedDict(x=SPEC["x"], y=y_spec)
    message = (r"input_spec field 'y' has shape .* with no batch dimension; "
               r"every field needs the batch dimension first \(None or a fixed size\)")
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(LinearRegression(input_spec=spec))


def test_keras_input_spec_without_batch_dimension():
    spec = (KERAS_SPEC[0], tf.TensorSpec([], tf.float32))
    message = "input_spec field '1' has shape .* with no batch dimension"
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(_keras_model(spec=spec))


def test_input_spec_with_a_fixed_batch_size_passes():
    spec = collections.OrderedDict(x=tf.TensorSpec([3, 2]), y=tf.TensorSpec([3, 1]))
    fedsim.enhance(LinearRegression(input_spec=spec)).forward_pass(_batch())


def test_input_spec_that_is_not_tensor_specs():
    bad_spec = collections.OrderedDict(x=tf.TensorSpec([None, 2]), y=(None, 1))
    message = "input_spec must be a nested structure of tf.TensorSpec"
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(LinearRegression(input_spec=bad_spec))


# 6. A batch has input_spec's structure ------------------------------------------------
def test_batch_container_or_keys_that_differ_from_input_spec():
    model = fedsim.enhance(LinearRegression())
    x, y = _batch()["x"], _batch()["y"]
    message = (r"structure does not match input_spec: the batch has tuple of 2, "
               r"input_spec has OrderedDict with keys \['x', 'y'\]")
    with pytest.raises(ModelCheckError, match=message):
        model.forward_pass((x, y))
    message = (r"the batch has dict with keys \['x', 'z'\], "
               r"input_spec has OrderedDict with keys \['x', 'y'\]")
    with pytest.raises(ModelCheckError, match=message):
        model.forward_pass({"x": x, "z": y})

    keras_model = fedsim.enhance(_keras_model())
    features, labels = _keras_batch()
    message = r"the batch has dict with keys \['x', 'y'\], input_spec has tuple of 2"
    with pytest.raises(ModelCheckError, match=message):
        keras_model.forward_pass({"x": features, "y": labels})
    keras_model.forward_pass([features, labels])  # positional either way: a list stands for a tuple


def test_check_batch_pairs_fields_by_key_and_names_nested_fields():
    spec = collections.OrderedDict(
        y=tf.TensorSpec([None], tf.int32), x=tf.TensorSpec([None, 2], tf.float32))
    check_batch({"x": np.zeros((3, 2), np.float32), "y": np.zeros(3, np.int32)}, spec)
    nested = (tf.TensorSpec([None]), (tf.TensorSpec([None]), tf.TensorSpec([None])))
    message = (r"input_spec at field '1': the batch has dict with keys \['a'\], "
               "input_spec has tuple of 2")
    with pytest.raises(ModelCheckError, match=message):
        check_batch((np.zeros(3, np.float32), {"a": np.zeros(3, np.float32)}), nested)


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


# 7. weights are the live variables ------------------------------------------------------
def test_weights_are_the_live_variables_and_weight_values_a_copy():
    model = fedsim.enhance(LinearRegression())
    weights = model.weights
    assert isinstance(weights, WeightVariables)
    assert weights.trainable[0] is model.trainable_variables[0] and weights.non_trainable == ()
    weights.trainable[0].assign([[1.0], [2.0]])
    np.testing.assert_array_equal(model.predict_on_batch(np.ones((1, 2), np.float32)), [[3.0]])
    values = model.weight_values
    assert isinstance(values, fedsim.ModelWeights)
    model.weights.trainable[1].assign([5.0])
    np.testing.assert_array_equal(values.trainable[0], [[1.0], [2.0]])
    np.testing.assert_array_equal(values.trainable[1], [0.0])

    keras_model = fedsim.enhance(_keras_model())
    moving_mean = keras_model.wrapped.keras_model.layers[1].moving_mean
    keras_model.weights.non_trainable[0].assign([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(moving_mean.numpy(), [1.0, 2.0, 3.0])


# Other checks and sound models ---------------------------------------------------------
def test_forward_pass_without_loss():
    model = fedsim.enhance(NoLoss())
    with pytest.raises(ModelCheckError, match="forward_pass returned BatchOutput without a loss"):
        model.forward_pass(_batch())


def test_metric_names_that_differ():
    message = r"only reported: \['loss'\], only finalized: \['mse'\]"
    with pytest.raises(ModelCheckError, match=message):
        fedsim.enhance(MismatchedMetrics())


def test_well_formed_models_pass():
    model = fedsim.enhance(LinearRegression())
    assert type(model) is EnhancedModel
    assert float(model.forward_pass(_batch()).loss) == pytest.approx(0.0)
    assert fedsim.enhance(model) is model

    legacy = fedsim.enhance(LegacyEvaluationModel())
    assert type(legacy) is EnhancedModel and legacy.uses_federated_output_computation
    legacy.forward_pass(_batch(), training=False)

    trainable = fedsim.enhance(LegacyLinearRegression())
    assert isinstance(trainable, EnhancedTrainableModel)
    assert trainable.uses_federated_output_computation
    trainable.train_on_batch(_batch())

    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for keras_model in (dense, _batch_norm_dropout_model()):
        enhanced = fedsim.enhance(fedsim.from_keras_model(
            keras_model, keras.losses.MeanSquaredError(), KERAS_SPEC,
            metrics=[keras.metrics.MeanAbsoluteError()]))
        for training in (True, False):
            enhanced.forward_pass(_keras_batch(), training=training)
