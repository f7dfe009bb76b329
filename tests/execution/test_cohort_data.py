"""Reading client datasets into padded tensors: the NumPy shortcut equals the tf.data reader."""
import numpy as np
import pytest
import tensorflow as tf

from fedsim.execution.cohort_data import client_tensors, sliced_client_tensors

_read = tf.function(client_tensors)


def _source(n, nested, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int32)
    return {"x": {"a": x, "b": x[:, 0]}, "y": y} if nested else (x, y)


@pytest.mark.parametrize("nested", [False, True], ids=["tuple", "nested_dict"])
@pytest.mark.parametrize("n, batch", [(7, 4), (8, 4), (3, 4), (0, 4), (21, 20)])
def test_sliced_reader_equals_the_tf_data_reader(n, batch, nested):
    dataset = tf.data.Dataset.from_tensor_slices(_source(n, nested)).batch(batch)
    got, expected = sliced_client_tensors(dataset), _read(dataset)
    tf.nest.assert_same_structure(got, expected)
    for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g.numpy(), e.numpy())


@pytest.mark.parametrize("prepare", [
    lambda d: d.batch(2, drop_remainder=True),
    lambda d: d.map(lambda x, y: (x, y)).batch(2),
    lambda d: d.batch(2).repeat(2),
], ids=["drop_remainder", "mapped", "repeated"])
def test_sliced_reader_declines_other_pipelines(prepare):
    assert sliced_client_tensors(prepare(tf.data.Dataset.from_tensor_slices(_source(5, False)))) is None


def test_sliced_reader_declines_strings():
    dataset = tf.data.Dataset.from_tensor_slices((np.array(["a", "b", "c"]), np.arange(3))).batch(2)
    assert sliced_client_tensors(dataset) is None
