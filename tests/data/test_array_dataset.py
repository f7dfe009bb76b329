"""ArrayDataset behaves as the tf.data pipeline it stands for, and stays lazy for batch/repeat."""
import numpy as np
import pytest
import tensorflow as tf

from fedsim.data.array_dataset import ArrayDataset


def _arrays(n=45):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, 3)).astype(np.float32), "y": rng.integers(0, 5, n).astype(np.int64)}


def _elements(dataset):
    return [tf.nest.map_structure(np.asarray, e) for e in dataset.as_numpy_iterator()]


PIPELINES = {
    "source": lambda d: d,
    "batch": lambda d: d.batch(20),
    "batch_repeat": lambda d: d.batch(20).repeat(3),
    "batch_drop_remainder": lambda d: d.batch(20, drop_remainder=True),
    "repeat_then_batch": lambda d: d.repeat(2).batch(20),  # crosses the pass boundary: plain tf.data
    "map_take": lambda d: d.map(lambda e: e["y"] * 2).take(7),
    "shuffle_batch": lambda d: d.shuffle(50, seed=3, reshuffle_each_iteration=False).batch(8),
}


@pytest.mark.parametrize("name", PIPELINES)
def test_every_pipeline_yields_what_tf_data_yields(name):
    pipeline = PIPELINES[name]
    lazy = pipeline(ArrayDataset.from_arrays(_arrays()))
    reference = pipeline(tf.data.Dataset.from_tensor_slices(_arrays()))
    assert lazy.element_spec == reference.element_spec
    assert int(lazy.cardinality()) == int(reference.cardinality())
    got, expected = _elements(lazy), _elements(reference)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        tf.nest.map_structure(np.testing.assert_array_equal, g, e)


def test_batch_and_repeat_stay_lazy_and_report_their_batches():
    dataset = ArrayDataset.from_arrays(_arrays(45)).batch(20).repeat(2)
    assert isinstance(dataset, ArrayDataset) and dataset._materialized is None
    batches, mask = dataset.batched_arrays()
    assert batches["x"].shape == (6, 20, 3)
    # 45 examples: 20 + 20 + 5 per pass, two passes.
    np.testing.assert_array_equal(mask.sum(axis=1), [20, 20, 5, 20, 20, 5])
    np.testing.assert_array_equal(batches["y"][3], _arrays(45)["y"][:20])
    assert len(dataset) == 6


def test_a_tf_function_traces_once_for_lazy_and_plain_datasets_alike():
    @tf.function
    def total(dataset):
        return dataset.reduce(tf.constant(0, tf.int64), lambda s, e: s + tf.reduce_sum(e["y"]))

    lazy = ArrayDataset.from_arrays(_arrays(45)).batch(20)
    plain = tf.data.Dataset.from_tensor_slices(_arrays(30)).batch(20)
    assert int(total(lazy)) == int(_arrays(45)["y"].sum())
    assert int(total(plain)) == int(_arrays(30)["y"].sum())
    assert total.experimental_get_tracing_count() == 1


def test_string_arrays_get_a_plain_tf_data_dataset():
    dataset = ArrayDataset.from_arrays((np.array(["a", "b"]), np.arange(2)))
    assert not isinstance(dataset, ArrayDataset)
    assert [e[0] for e in dataset.as_numpy_iterator()] == [b"a", b"b"]


@pytest.mark.parametrize("arrays, lengths", [
    ((np.zeros((3, 2)), np.zeros(4)), "[3, 4]"),
    ((np.zeros((3, 2)), np.float32(1.0)), "[3, None]"),
])
def test_arrays_that_disagree_on_the_example_axis_are_refused(arrays, lengths):
    with pytest.raises(ValueError, match=rf"got lengths \{lengths}"):
        ArrayDataset.from_arrays(arrays)
