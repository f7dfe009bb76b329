"""Fast executors give the sequential executor's answers (within float rounding)."""
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.execution import (
    MultiDeviceExecutor, SequentialExecutor, VectorizationError, VectorizedExecutor, make_executor)
from fedsim.client import ClientFailure, ClientWork
from tests.models.toy_models import LinearRegression
from tests.execution.helpers import EQUAL_SIZES, NUM_CLASSES, RAGGED_SIZES, model_fn, population

ATOL = 1e-5


def _run(executor, sizes, momentum, rounds=3, weighted=True):
    data = fedsim.ClientData.from_tensor_slices(population(sizes))
    process = fedsim.build_fedavg(
        model_fn(), client_optimizer=fedsim.SGD(0.1, momentum=momentum), weighted=weighted,
        batch_size=4, executor_fn=lambda work: make_executor(executor, work))
    sampler = fedsim.UniformSampler(cohort_size=3, seed=5)
    return process, fedsim.simulate(process, data, rounds, sampler, progress=False)


@pytest.mark.parametrize("executor", ["vectorized", "multi_device"])
@pytest.mark.parametrize("sizes", [EQUAL_SIZES, RAGGED_SIZES], ids=["equal", "ragged"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_three_rounds_same_model_weights_and_metrics(executor, sizes, momentum):
    _, expected = _run("sequential", sizes, momentum)
    process, got = _run(executor, sizes, momentum)
    assert process.executor.name == executor
    for a, b in zip(expected.state.model_weights.trainable, got.state.model_weights.trainable):
        np.testing.assert_allclose(b, a, atol=ATOL)
    for a, b in zip(expected.history, got.history):
        assert a["num_examples"] == b["num_examples"]
        for name, value in a["train"].items():
            np.testing.assert_allclose(b["train"][name], value, rtol=1e-5, atol=ATOL)


def _outputs(executor_cls, datasets, weighted=True, momentum=0.9):
    work = ClientWork(model_fn()(), fedsim.SGD(0.1, momentum=momentum), weighted=weighted)
    weights = fedsim.ModelWeights.from_model(work.model)
    return executor_cls(work).train(weights, datasets)


def _datasets(sizes, prepare=lambda d: d.batch(4)):
    return [prepare(tf.data.Dataset.from_tensor_slices(xy)) for xy in population(sizes).values()]


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "prefix"])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize(
    "prepare",
    [lambda d: d.batch(4), lambda d: d.map(lambda x, y: (x * 2.0, y)).batch(3), lambda d: d.batch(5).repeat(2),
     # Reshuffles on every read: the executor must read it once, as training does.
     lambda d: d.shuffle(50, seed=1).batch(3)],
    ids=["static", "mapped", "two_epochs", "shuffled"])
def test_client_outputs_equal_unfinalized_metrics_included(xla, weighted, prepare):
    sizes = RAGGED_SIZES + [0]  # a client with no examples must not move or count
    expected = _outputs(SequentialExecutor, _datasets(sizes, prepare), weighted)
    got = _outputs(partial(VectorizedExecutor, xla=xla), _datasets(sizes, prepare), weighted)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert (g.num_examples, g.update_weight, g.num_steps) == (e.num_examples, e.update_weight, e.num_steps)
        for a, b in zip(e.delta, g.delta):
            np.testing.assert_allclose(b, a, atol=ATOL)
        assert list(g.metrics) == list(e.metrics)
        for name in e.metrics:
            for a, b in zip(e.metrics[name], g.metrics[name]):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=ATOL)
    assert not any(np.any(d) for d in got[-1].delta)


def test_every_variable_changes_every_round():
    data = fedsim.ClientData.from_tensor_slices(population(RAGGED_SIZES))
    process = fedsim.build_fedavg(model_fn(), client_optimizer=fedsim.SGD(0.1), batch_size=4,
                                  executor_fn=lambda work: make_executor("auto", work))
    assert process.executor.name == "vectorized"
    state = process.initialize()
    names = [v.path for v in process.model.keras_model.trainable_variables]
    assert len(set(n.rsplit("/", 1)[-1] for n in names)) == 2  # layers share kernel/bias names
    for round_num in range(3):
        datasets = [data.create_tf_dataset_for_client(c) for c in data.client_ids[:3]]
        new_state = process.next(state, datasets).state
        for name, a, b in zip(names, state.model_weights.trainable, new_state.model_weights.trainable):
            assert not np.array_equal(a, b), f"{name} did not change in round {round_num + 1}"
        state = new_state


def test_traced_once_for_ragged_cohorts_of_one_size():
    process, _ = _run("vectorized", RAGGED_SIZES, 0.0, rounds=4)
    assert process.executor.trainer.trace_count == 1


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "prefix"])
def test_traced_once_per_padded_shape_for_cohorts_of_any_size_and_source(xla):
    work = ClientWork(model_fn()(), fedsim.SGD(0.1))
    executor = VectorizedExecutor(work, xla=xla)
    weights = fedsim.ModelWeights.from_model(work.model)
    lazy = fedsim.ClientData.from_tensor_slices(population([9, 30, 2, 17]))
    shapes = set()
    for sizes in ([20, 3], [7, 13, 40, 1], [5]):
        executor.train(weights, _datasets(sizes))
        shapes.add(executor.trainer.padded)
    executor.train(weights, [lazy.create_tf_dataset_for_client(c).batch(4) for c in lazy.client_ids])
    shapes.add(executor.trainer.padded)
    # The graph path traces once; XLA once per padded shape: (2, 8, 4), then (4, 16, 4) for the rest.
    assert executor.trainer.trace_count == (2 if xla else 1)
    assert shapes == ({(2, 8, 4), (4, 16, 4)} if xla else {(0, 0, 0)})


def test_xla_pads_to_the_largest_shape_seen_so_compiles_stay_few():
    work = ClientWork(model_fn()(), fedsim.SGD(0.1))
    executor = VectorizedExecutor(work, xla=True)
    weights = fedsim.ModelWeights.from_model(work.model)
    executor.train(weights, _datasets([20, 20, 20]))  # 5 batches of 4 each: nothing to pad
    assert executor.trainer.padded == (3, 5, 4)
    executor.train(weights, _datasets([7, 13]))  # fewer clients and batches: padded up, not down
    assert executor.trainer.padded == (3, 5, 4)
    executor.train(weights, _datasets([24, 7]))  # ragged, 6 batches at most: to a power of two, 8
    assert executor.trainer.padded == (3, 8, 4)
    # A smaller cohort (dropouts) is padded with empty clients, which return nothing.
    got = executor.train(weights, _datasets([7, 13]))
    expected = SequentialExecutor(work).train(weights, _datasets([7, 13]))
    assert len(got) == 2
    for e, g in zip(expected, got):
        for a, b in zip(e.delta, g.delta):
            np.testing.assert_allclose(b, a, atol=ATOL)


def test_convolutional_models_train_without_xla():
    def conv_model():
        model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                                  keras.layers.Dense(NUM_CLASSES)])
        spec = (tf.TensorSpec([None, 4, 4, 1], tf.float32), tf.TensorSpec([None], tf.int32))
        return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec)

    assert not VectorizedExecutor(ClientWork(conv_model(), fedsim.SGD(0.1))).trainer.xla
    assert VectorizedExecutor(ClientWork(model_fn()(), fedsim.SGD(0.1))).trainer.xla


def test_auto_falls_back_to_sequential_when_it_cannot_vectorize():
    work = ClientWork(LinearRegression(), fedsim.SGD(0.1), proximal_mu=0.1)
    assert make_executor("auto", work).name == "sequential"
    with pytest.raises(VectorizationError, match="not a from_keras_model model.*use executor 'sequential'"):
        make_executor("vectorized", work)
    # Objective hooks are part of the one client step: the batched executors run them.
    assert make_executor("auto", ClientWork(model_fn()(), fedsim.SGD(0.1), proximal_mu=0.1)).name == "vectorized"


def test_unknown_executor_name_lists_the_choices():
    work = ClientWork(model_fn()(), fedsim.SGD(0.1))
    with pytest.raises(ValueError, match="'fastest'.*auto, sequential, vectorized, multi_device"):
        make_executor("fastest", work)


def test_multi_device_rejects_an_empty_device_list():
    work = ClientWork(model_fn()(), fedsim.SGD(0.1))
    with pytest.raises(ValueError, match="devices is empty"):
        MultiDeviceExecutor(work, devices=[])


def test_xla_cohort_with_an_invalid_label_raises_like_sequential():
    # XLA gives NaN for an out-of-range label; the executor reruns as a graph, which raises.
    x, y = population([4])["c0"]
    bad = [tf.data.Dataset.from_tensor_slices((x, np.full_like(y, NUM_CLASSES + 4))).batch(4)]
    work = ClientWork(model_fn()(), fedsim.SGD(0.1))
    weights = fedsim.ModelWeights.from_model(work.model)
    for executor in (SequentialExecutor(work), VectorizedExecutor(work, xla=True)):
        [failure] = executor.train(weights, bad, client_ids=["bad"])
        assert isinstance(failure, ClientFailure) and failure.client_id == "bad"
        assert isinstance(failure.error, tf.errors.InvalidArgumentError) and "label value" in str(failure)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_xla_stages_of_a_long_ragged_cohort_match_sequential(momentum):
    # 9 clients of 1..10 batches: stages of 9, 5, 3 and 2 clients, each ending mid-cohort.
    sizes = [1, 40, 3, 17, 8, 25, 2, 12, 33]
    work = ClientWork(model_fn()(), fedsim.SGD(0.1, momentum=momentum))
    weights = fedsim.ModelWeights.from_model(work.model)
    expected = SequentialExecutor(work).train(weights, _datasets(sizes))
    got = VectorizedExecutor(work, xla=True).train(weights, _datasets(sizes))
    for e, g in zip(expected, got):
        assert (g.num_examples, g.num_steps) == (e.num_examples, e.num_steps)
        for a, b in zip(e.delta, g.delta):
            np.testing.assert_allclose(b, a, atol=ATOL)
        for name in e.metrics:
            for a, b in zip(e.metrics[name], g.metrics[name]):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=ATOL)


def test_stage_widths_halve_down_to_two():
    from fedsim.execution.cohort_steps import stage_widths

    assert stage_widths(10) == [10, 5, 3, 2]
    assert stage_widths(9) == [9, 5, 3, 2]
    assert stage_widths(2) == [2]
    assert stage_widths(1) == [1]


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "prefix"])
def test_chunked_cohorts_match_sequential_in_cohort_order(xla):
    # 7 clients in chunks of at most 3 (three chunks of 3, 2, 2), sorted by length across chunks.
    sizes = [5, 40, 3, 17, 8, 25, 12]
    work = ClientWork(model_fn()(), fedsim.SGD(0.1, momentum=0.9))
    weights = fedsim.ModelWeights.from_model(work.model)
    expected = SequentialExecutor(work).train(weights, _datasets(sizes))
    got = VectorizedExecutor(work, xla=xla, max_chunk=3).train(weights, _datasets(sizes))
    assert [g.num_examples for g in got] == sizes
    atol = ATOL if xla else 0.0  # the graph client loop: bit for bit
    for e, g in zip(expected, got):
        for a, b in zip(e.delta, g.delta):
            np.testing.assert_allclose(b, a, atol=atol, rtol=0.0 if atol == 0.0 else 1e-7)
        np.testing.assert_allclose(g.metrics["loss"], e.metrics["loss"], rtol=1e-5 if xla else 0.0)


@pytest.mark.parametrize("max_chunk", [3, 32], ids=["chunked", "one_call"])
def test_results_are_writable_arrays_of_their_own(max_chunk):
    work = ClientWork(model_fn()(), fedsim.SGD(0.1))
    weights = fedsim.ModelWeights.from_model(work.model)
    got = VectorizedExecutor(work, max_chunk=max_chunk).train(weights, _datasets([5, 40, 3, 17, 8]))
    deltas = [d for g in got for d in g.delta]
    assert all(d.flags.writeable for d in deltas)
    deltas[0][...] = 7.0  # aggregators may scale a delta in place: no other client's array may change
    assert not any((d == 7.0).all() for d in deltas[1:])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_max_chunk_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=f"max_chunk={bad!r}"):
        VectorizedExecutor(ClientWork(model_fn()(), fedsim.SGD(0.1)), max_chunk=bad)


def _wide_model():
    """A dense ReLU model above XLA_MAX_PARAMETERS_ON_CPU (6*2000 + 2000 + 2000*3 + 3 = 20,003 parameters)."""
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2000, activation="relu"),
                              keras.layers.Dense(NUM_CLASSES)])
    spec = (tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
                                   metrics=[keras.metrics.SparseCategoricalAccuracy()])


def test_larger_dense_models_use_the_client_loop_on_cpu():
    from fedsim.execution.xla_rules import XLA_MAX_PARAMETERS_ON_CPU, xla_blocker

    assert XLA_MAX_PARAMETERS_ON_CPU == 10_000
    assert xla_blocker(_wide_model()) == (
        "20,003 trainable parameters, more than 10,000: on CPU the client loop is as fast and gives the "
        "sequential result bit for bit")
    assert xla_blocker(model_fn()()) is None  # 53 parameters: XLA


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_larger_dense_model_vectorized_is_sequential_bit_for_bit_after_three_rounds(momentum):
    data = fedsim.ClientData.from_tensor_slices(population(RAGGED_SIZES))

    def run(executor):
        process = fedsim.build_fedavg(
            _wide_model, client_optimizer=fedsim.SGD(0.1, momentum=momentum), batch_size=4,
            executor_fn=lambda work: make_executor(executor, work))
        result = fedsim.simulate(process, data, 3, fedsim.UniformSampler(cohort_size=3, seed=5), progress=False)
        return process, result

    process, got = run("auto")
    assert process.executor.name == "vectorized" and not process.executor.trainer.xla
    _, expected = run("sequential")
    for g, e in zip(got.state.model_weights.trainable, expected.state.model_weights.trainable):
        np.testing.assert_array_equal(g, e)
    assert [r["train"] for r in got.history] == [r["train"] for r in expected.history]


class _ThroughPython(keras.layers.Layer):
    """Identity computed in Python (``tf.numpy_function``), which XLA cannot compile."""

    def call(self, x):
        return tf.ensure_shape(tf.numpy_function(lambda a: a, [x], tf.float32), x.shape)


def _model_through_python():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), _ThroughPython(), keras.layers.Dense(NUM_CLASSES)])
    spec = (tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec)


def test_a_model_that_calls_python_trains_on_the_client_loop_as_sequential():
    """XLA would fail every client of such a model; the client loop runs it, bit for bit."""
    from fedsim.execution.xla_rules import xla_blocker

    assert xla_blocker(_model_through_python()) == (
        "the model calls Python (PyFunc: tf.numpy_function or tf.py_function), which XLA cannot compile")
    data = fedsim.ClientData.from_tensor_slices(population(RAGGED_SIZES))
    results = {}
    for executor in ("auto", "sequential"):
        process = fedsim.build_fedavg(_model_through_python, client_optimizer=fedsim.SGD(0.1), batch_size=4,
                                      executor_fn=lambda work: make_executor(executor, work))
        results[executor] = fedsim.simulate(process, data, 2, fedsim.UniformSampler(cohort_size=3, seed=5),
                                            progress=False)
        if executor == "auto":
            assert process.executor.name == "vectorized" and not process.executor.trainer.xla
    for got, want in zip(results["auto"].state.model_weights.trainable,
                         results["sequential"].state.model_weights.trainable):
        np.testing.assert_array_equal(got, want)
