"""Faults in a round: failing clients retried then dropped (or raised), non-finite updates zeroed."""
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.learning.faults import ClientFailure, FaultPolicy, NonFiniteUpdateError
from fedsim.learning.validation import ClientDatasetError
from tests import logreg_reference as ref
from tests.learning.test_fedavg_reference import BATCH, LR, NUM_CLASSES, NUM_FEATURES, logreg_model_fn

RNG = np.random.default_rng(11)
KERNEL = RNG.normal(size=(NUM_FEATURES, NUM_CLASSES))
BIAS = np.zeros(NUM_CLASSES)
GOOD = ref.make_clients([6, 9], NUM_FEATURES, NUM_CLASSES, seed=12)


def _process(**faults):
    return fedsim.build_fedavg(logreg_model_fn(KERNEL, BIAS), fedsim.SGD(LR), batch_size=BATCH,
                               faults=FaultPolicy(**faults))


def _nan_client():
    x, y = ref.make_clients([5], NUM_FEATURES, NUM_CLASSES, seed=13)[0]
    x[2, 1] = np.nan
    return x, y


def _raising(client):
    # check_numerics raises inside the client's compiled loop: the client's work fails.
    return tf.data.Dataset.from_tensor_slices(client).map(
        lambda x, y: (tf.debugging.check_numerics(x, "client data holds NaN"), y))


def _good_only_weights():
    kernel, bias = ref.fedavg_round(KERNEL, BIAS, GOOD, BATCH, LR)
    return kernel, bias


def test_failing_client_is_retried_then_dropped_and_counted():
    process = _process()
    datasets = [tf.data.Dataset.from_tensor_slices(GOOD[0]), _raising(_nan_client()),
                tf.data.Dataset.from_tensor_slices(GOOD[1])]
    result = process.next(process.initialize(), datasets, client_ids=["a", "bad", "c"])
    assert result.measurements["faults/clients_dropped"] == 1
    assert result.measurements["faults/clients_retried"] == 1
    assert result.num_clients == 2 and result.metrics["num_examples"] == 15
    kernel, bias = _good_only_weights()
    np.testing.assert_allclose(result.state.model_weights.trainable[0], kernel, atol=1e-5)
    np.testing.assert_allclose(result.state.model_weights.trainable[1], bias, atol=1e-5)


def test_failing_client_raises_with_its_id_when_configured():
    process = _process(on_client_failure="raise", client_retries=0)
    datasets = [tf.data.Dataset.from_tensor_slices(GOOD[0]), _raising(_nan_client())]
    with pytest.raises(ClientFailure, match=r"client 'bad' failed \(attempt 1\): InvalidArgumentError: .*client data holds NaN"):
        process.next(process.initialize(), datasets, client_ids=["a", "bad"])


def test_a_cohort_where_every_client_fails_stops_the_run():
    with pytest.raises(ClientFailure, match="client 'only'"):
        _process().next(_process().initialize(), [_raising(_nan_client())], client_ids=["only"])


def test_nonfinite_update_is_zeroed_counted_and_keeps_the_model_finite():
    process = _process()
    datasets = [tf.data.Dataset.from_tensor_slices(c) for c in (GOOD[0], _nan_client(), GOOD[1])]
    result = process.next(process.initialize(), datasets, client_ids=["a", "nan", "c"])
    assert result.measurements["faults/nonfinite_updates"] == 1
    assert all(np.isfinite(w).all() for w in result.state.model_weights.trainable)
    assert np.isfinite(result.metrics["loss"]) and result.metrics["num_examples"] == 15
    kernel, bias = _good_only_weights()
    np.testing.assert_allclose(result.state.model_weights.trainable[0], kernel, atol=1e-5)
    np.testing.assert_allclose(result.state.model_weights.trainable[1], bias, atol=1e-5)


def test_nonfinite_update_raises_when_configured():
    process = _process(on_nonfinite_update="raise")
    with pytest.raises(NonFiniteUpdateError, match="client 'nan' sent an update holding NaN or Inf"):
        process.next(process.initialize(), [tf.data.Dataset.from_tensor_slices(_nan_client())], ["nan"])


def test_dataset_that_does_not_fit_the_model_names_the_client_and_field():
    x, y = GOOD[0]
    wrong_dtype = tf.data.Dataset.from_tensor_slices((x.astype(np.float64), y))
    with pytest.raises(ClientDatasetError, match=r"client 'c7': batch field '0' is float64 \[None, 6\], the model expects float32 \[None, 6\]"):
        _process().next(_process().initialize(), [wrong_dtype], ["c7"])
    wrong_width = tf.data.Dataset.from_tensor_slices((x[:, :4], y))
    with pytest.raises(ClientDatasetError, match=r"client 'c8': batch field '0' is float32 \[None, 4\]"):
        _process().next(_process().initialize(), [wrong_width], ["c8"])
    with pytest.raises(ClientDatasetError, match="client 'c9': its dataset yields"):
        _process().next(_process().initialize(), [tf.data.Dataset.from_tensor_slices(x)], ["c9"])


def test_policy_values_are_validated():
    with pytest.raises(ValueError, match=r"on_client_failure='skip' must be one of \['drop', 'raise'\]"):
        FaultPolicy(on_client_failure="skip")
