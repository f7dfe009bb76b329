"""Reading client datasets into padded tensors: the ArrayDataset shortcut equals the tf.data reader."""
import numpy as np
import pytest
import tensorflow as tf

from fedsim.data.array_dataset import ArrayDataset
from fedsim.execution.cohort_data import (
    aligned_empty, array_client_tensors, as_tensor, client_tensors, is_static, stack_clients)

_read = tf.function(client_tensors)


def _source(n, nested, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int32)
    return {"x": {"a": x, "b": x[:, 0]}, "y": y} if nested else (x, y)


@pytest.mark.parametrize("nested", [False, True], ids=["tuple", "nested_dict"])
@pytest.mark.parametrize("n, batch, repeats", [(7, 4, 1), (8, 4, 1), (3, 4, 1), (0, 4, 1), (21, 20, 1), (7, 4, 3)])
def test_array_reader_equals_the_tf_data_reader(n, batch, repeats, nested):
    lazy = ArrayDataset.from_arrays(_source(n, nested)).batch(batch).repeat(repeats)
    reference = tf.data.Dataset.from_tensor_slices(_source(n, nested)).batch(batch).repeat(repeats)
    got, expected = array_client_tensors(lazy), _read(reference).as_numpy()
    tf.nest.assert_same_structure(got, expected)
    for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
    assert is_static(lazy)


@pytest.mark.parametrize("dataset", [
    ArrayDataset.from_arrays(_source(5, False)),  # not batched
    ArrayDataset.from_arrays(_source(5, False)).batch(2, drop_remainder=True),
    ArrayDataset.from_arrays(_source(5, False)).map(lambda x, y: (x, y)).batch(2),
    tf.data.Dataset.from_tensor_slices(_source(5, False)).batch(2),
], ids=["unbatched", "drop_remainder", "mapped", "plain_tf_data"])
def test_array_reader_declines_other_pipelines(dataset):
    assert array_client_tensors(dataset) is None


def test_stack_clients_pads_to_the_cohort_or_the_requested_shape():
    clients = [array_client_tensors(ArrayDataset.from_arrays(_source(n, False)).batch(4)) for n in (7, 2)]
    cohort = stack_clients(clients)
    assert cohort.mask.shape == (2, 2, 4)
    np.testing.assert_array_equal(cohort.num_batches, [2, 1])
    np.testing.assert_array_equal(cohort.mask.sum(axis=(1, 2)), [7, 2])
    np.testing.assert_array_equal(cohort.x[1, 0, :2], _source(2, False)[0])
    assert not cohort.x[1, 1].any() and not cohort.x[1, 0, 2:].any()  # padding is zeros
    padded = stack_clients(clients, clients_to=3, batches_to=4, batch_size_to=5)
    assert padded.x.shape == (3, 4, 5, 2, 3)
    np.testing.assert_array_equal(padded.num_batches, [2, 1, 0])
    np.testing.assert_array_equal(padded.x[:2, :2, :4], cohort.x)


def test_stack_clients_pads_strings_with_empty_bytes_like_tf_data():
    dataset = tf.data.Dataset.from_tensor_slices((np.array([b"a", b"b", b"c"]), np.arange(3))).batch(2)
    client = _read(dataset).as_numpy()  # strings are read by tf.data, not the NumPy shortcut
    cohort = stack_clients([client], batches_to=3)
    assert cohort.x.dtype == object
    assert cohort.x.tolist() == [[[b"a", b"b"], [b"c", b""], [b"", b""]]]
    np.testing.assert_array_equal(cohort.mask, [[[1, 1], [1, 0], [0, 0]]])


def _padded_by_hand(xs, rows, batches, width):
    """The stacked x of clients whose batches are ``xs`` (each [batches, width, ...]), zero-padded."""
    out = np.zeros((rows, batches, width) + xs[0].shape[2:], xs[0].dtype)
    for c, x in enumerate(xs):
        out[c, :x.shape[0], :x.shape[1]] = x
    return out


def test_stack_clients_writes_every_padded_element_and_aligns_numeric_arrays():
    clients = [array_client_tensors(ArrayDataset.from_arrays(_source(n, True, seed=n)).batch(4)) for n in (9, 5, 2)]
    for _ in range(3):  # fresh arrays may reuse memory that held earlier (nonzero) cohorts
        for chosen, rows, batches_to in ((clients, 3, 0), (clients[1:], 3, 2), (clients[:1], 2, 4)):
            cohort = stack_clients(chosen, clients_to=rows, batches_to=batches_to)
            batches = max(batches_to, max(c.mask.shape[0] for c in chosen))
            for got, leaf in ((cohort.x["a"], lambda c: c.x["a"]), (cohort.x["b"], lambda c: c.x["b"]),
                              (cohort.y, lambda c: c.y), (cohort.mask, lambda c: c.mask)):
                np.testing.assert_array_equal(got, _padded_by_hand([leaf(c) for c in chosen], rows, batches, 4))
                assert got.ctypes.data % 64 == 0


@pytest.mark.parametrize("shape, dtype", [((3, 5), np.float32), ((7,), np.int8), ((2, 0, 3), np.float64)])
def test_aligned_empty_starts_on_64_bytes(shape, dtype):
    arrays = [aligned_empty(shape, dtype) for _ in range(4)]
    for array in arrays:
        assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous and array.flags.writeable
        assert array.size == 0 or array.ctypes.data % 64 == 0


def test_as_tensor_equals_the_array_aligned_or_not():
    aligned = aligned_empty((4, 6), np.float32)
    aligned[...] = np.arange(24, dtype=np.float32).reshape(4, 6)
    unaligned = np.arange(25, dtype=np.float32)[1:].reshape(4, 6)  # 4 bytes past an allocation's start
    for array in (aligned, unaligned, np.arange(3, dtype=np.int64), np.zeros((0, 2), np.float32),
                  np.array([b"a", b""], dtype=object)):
        tensor = as_tensor(array)
        assert tensor.dtype == tf.as_dtype(array.dtype if array.dtype != object else tf.string)
        assert tensor.shape == array.shape
        assert tensor.numpy().tolist() == array.tolist()
