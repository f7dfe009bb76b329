"""Client datasets exported to NumPy and rebuilt: same elements, same element spec (no Ray needed)."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from fedsim.execution.ray_datasets import UnsupportedDatasetError, export_dataset


def round_trip(dataset):
    exported = export_dataset(dataset)
    return exported, exported.to_dataset()


def assert_same_elements(got, want):
    got_elements, want_elements = list(got.as_numpy_iterator()), list(want.as_numpy_iterator())
    assert len(got_elements) == len(want_elements)
    for g, w in zip(got_elements, want_elements):
        tf.nest.assert_same_structure(g, w)
        for a, b in zip(tf.nest.flatten(g), tf.nest.flatten(w)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("structure", ["tuple", "dict", "single"])
def test_batched_dataset_round_trips_with_its_element_spec(structure):
    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    y = np.arange(7, dtype=np.int32)
    element = {"tuple": (x, y), "dict": collections.OrderedDict(x=x, y=y), "single": x}[structure]
    dataset = tf.data.Dataset.from_tensor_slices(element).batch(3).repeat(2)
    exported, rebuilt = round_trip(dataset)
    assert rebuilt.element_spec == dataset.element_spec  # batch dimension stays unknown
    assert_same_elements(rebuilt, dataset)
    # Full batches and the partial one alternate (3, 3, 1, 3, 3, 1): four runs, not six arrays.
    assert len(exported.runs) == 4
    assert exported.nbytes == 2 * (x.nbytes + (y.nbytes if structure != "single" else 0))


def test_static_batch_dimension_is_kept():
    dataset = tf.data.Dataset.from_tensor_slices(np.ones((8, 2), np.float32)).batch(
        4, drop_remainder=True
    )
    _, rebuilt = round_trip(dataset)
    assert rebuilt.element_spec == tf.TensorSpec([4, 2], tf.float32)
    assert_same_elements(rebuilt, dataset)


def test_empty_dataset_round_trips():
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.ones((0, 5), np.float32), np.ones(0, np.int64))
    ).batch(2)
    exported, rebuilt = round_trip(dataset)
    assert exported.runs == () and rebuilt.element_spec == dataset.element_spec
    assert list(rebuilt) == []


def test_ragged_elements_are_refused_with_a_fix():
    dataset = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1, 2], [3]])).batch(2)
    with pytest.raises(UnsupportedDatasetError, match="pad them"):
        export_dataset(dataset)


@pytest.mark.parametrize("examples", [0, 1, 6, 7])
@pytest.mark.parametrize("batch, repeats", [(None, 1), (3, 1), (3, 2), (10, 3), (1, 2)])
@pytest.mark.parametrize("structure", ["tuple", "dict"])
def test_array_datasets_are_cut_from_their_arrays_as_iteration_would(examples, batch, repeats, structure):
    from fedsim.data.array_dataset import ArrayDataset

    x = np.arange(examples * 2, dtype=np.float32).reshape(examples, 2)
    y = np.arange(examples, dtype=np.int64)
    arrays = (x, y) if structure == "tuple" else collections.OrderedDict(x=x, y=y)
    dataset = ArrayDataset.from_arrays(arrays)
    if batch is not None:
        dataset = dataset.batch(batch).repeat(repeats)
    exported = export_dataset(dataset)
    assert dataset._materialized is None  # noqa: SLF001  (no tf.data pipeline was built)
    reference = export_dataset(dataset.materialize())  # the generic path: iterate the pipeline
    assert exported.element_spec == reference.element_spec
    assert len(exported.runs) == len(reference.runs)
    for got, want in zip(exported.runs, reference.runs):
        tf.nest.assert_same_structure(got, want)
        for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert_same_elements(exported.to_dataset(), dataset.materialize())
