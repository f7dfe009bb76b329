"""cohort_steps.client_loop_steps gives the sequential executor's results (bit for bit) for a small CNN."""
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.execution import SequentialExecutor
from fedsim.execution.cohort_steps import client_loop_steps
from fedsim.client.keras_step import KerasClientStep
from fedsim.client import ClientWork

ATOL = 1e-5
BATCH = 4
SIDE, NUM_CLASSES = 8, 3
EQUAL_SIZES = [8, 8, 8, 8, 8]
RAGGED_SIZES = [7, 13, 4, 20, 9, 0]  # short last batches (masked padding) and a client with no data


def _cnn_model(seed=3):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((SIDE, SIDE, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, padding="same"),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(NUM_CLASSES),
    ])
    spec = (tf.TensorSpec([None, SIDE, SIDE, 1], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(
        model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
        metrics=[keras.metrics.SparseCategoricalAccuracy()])


def _population(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n, SIDE, SIDE, 1)).astype(np.float32),
             rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)) for n in sizes]


def _padded(clients, pad_value=0.0):
    """``[clients, max_batches, BATCH, ...]`` arrays, the mask and batch counts (NumPy, no fedsim reader)."""
    counts = [-(-len(x) // BATCH) for x, _ in clients]
    batches = max(max(counts), 1)
    xs = np.full((len(clients), batches * BATCH, SIDE, SIDE, 1), pad_value, np.float32)
    ys = np.zeros((len(clients), batches * BATCH), np.int32)
    mask = np.zeros((len(clients), batches * BATCH), np.float32)
    for c, (x, y) in enumerate(clients):
        xs[c, :len(x)], ys[c, :len(y)], mask[c, :len(x)] = x, y, 1.0

    def split(a):
        return a.reshape((len(clients), batches, BATCH) + a.shape[2:])

    return split(xs), split(ys), split(mask), np.array(counts, np.int32)


def _datasets(clients):
    return [tf.data.Dataset.from_tensor_slices(xy).batch(BATCH) for xy in clients]


def _train_loop(work, weights, clients, parallel_clients=2, pad_value=0.0):
    step = KerasClientStep(work.model, work.task)
    fn = tf.function(partial(client_loop_steps, step, parallel_clients=parallel_clients))
    x, y, mask, counts = _padded(clients, pad_value)
    assert not weights.non_trainable  # else: one [clients, ...] start per non-trainable weight
    delta, num_examples, metrics, _ = fn(
        [tf.constant(w) for w in weights.trainable], [],
        tf.constant(x), tf.constant(y), tf.constant(mask), tf.constant(counts))
    return [d.numpy() for d in delta], num_examples.numpy(), tf.nest.map_structure(lambda t: t.numpy(), metrics)


def _work(momentum):
    return ClientWork(_cnn_model(), fedsim.SGD(0.1, momentum=momentum))


@pytest.mark.parametrize("sizes", [EQUAL_SIZES, RAGGED_SIZES], ids=["equal", "ragged"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_one_round_equals_sequential_outputs(sizes, momentum):
    work = _work(momentum)
    weights = fedsim.ModelWeights.from_model(work.model)
    clients = _population(sizes)
    expected = SequentialExecutor(work).train(weights, _datasets(clients))
    delta, num_examples, metrics = _train_loop(work, weights, clients)
    assert num_examples.tolist() == [out.num_examples for out in expected] == sizes
    for c, out in enumerate(expected):
        for got, want in zip(delta, out.delta):
            np.testing.assert_allclose(got[c], want, atol=ATOL)
        assert int(metrics["num_batches"][0][c]) == out.num_steps == -(-sizes[c] // BATCH)
        for name, values in out.metrics.items():
            for got, want in zip(metrics[name], values):
                np.testing.assert_allclose(got[c], want, rtol=1e-5, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("sizes", [EQUAL_SIZES, RAGGED_SIZES], ids=["equal", "ragged"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_three_fedavg_rounds_same_weights_as_sequential(sizes, momentum):
    """Weighted FedAvg with server SGD(1.0): the model after 3 rounds, both ways."""
    clients = _population(sizes)
    datasets = _datasets(clients)

    def run(train):
        work = _work(momentum)
        weights = fedsim.ModelWeights.from_model(work.model)
        trainable = [np.array(w) for w in weights.trainable]
        for _ in range(3):
            weights = fedsim.ModelWeights(trainable=trainable, non_trainable=list(weights.non_trainable))
            deltas, counts = train(work, weights)
            total = float(sum(counts))
            trainable = [w + sum(n * d[c] for c, n in enumerate(counts)) / total
                         for w, d in zip(trainable, deltas)]
        return trainable

    def sequential(work, weights):
        outputs = SequentialExecutor(work).train(weights, datasets)
        return [np.stack([o.delta[i] for o in outputs]) for i in range(len(outputs[0].delta))], \
            [o.num_examples for o in outputs]

    def looped(work, weights):
        delta, num_examples, _ = _train_loop(work, weights, clients)
        return delta, num_examples.tolist()

    for got, want in zip(run(looped), run(sequential)):
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_padding_and_parallelism_change_nothing():
    """Padded examples (whatever their values) are masked, and the client order/concurrency is invisible."""
    work = _work(0.9)
    weights = fedsim.ModelWeights.from_model(work.model)
    clients = _population(RAGGED_SIZES, seed=4)
    reference = _train_loop(work, weights, clients, parallel_clients=1)
    for parallel_clients, pad_value in [(2, 0.0), (3, 7.5), (1, -3.0)]:
        got = _train_loop(work, weights, clients, parallel_clients=parallel_clients, pad_value=pad_value)
        for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(reference)):
            np.testing.assert_array_equal(a, b)


def test_every_client_empty():
    work = _work(0.0)
    weights = fedsim.ModelWeights.from_model(work.model)
    delta, num_examples, metrics = _train_loop(work, weights, _population([0, 0]))
    assert num_examples.tolist() == [0, 0]
    assert all(not d.any() for d in delta)
    assert metrics["num_batches"][0].tolist() == [0, 0]


def test_masked_rows_inside_a_batch_count_for_nothing():
    """A padded row before the last real example is kept but masked: same result as without it."""
    work = _work(0.9)
    weights = fedsim.ModelWeights.from_model(work.model)
    clients = _population([7, 5], seed=2)
    expected = _train_loop(work, weights, clients)
    x, y, mask, counts = _padded(clients)
    # Client 0's second batch holds examples 4..6 in rows 0..2; move them to rows 0, 2, 3
    # and put a masked garbage row at 1.
    x[0, 1, [0, 2, 3]], y[0, 1, [0, 2, 3]] = x[0, 1, [0, 1, 2]].copy(), y[0, 1, [0, 1, 2]].copy()
    x[0, 1, 1], y[0, 1, 1] = 9.0, 2
    mask[0, 1] = [1.0, 0.0, 1.0, 1.0]
    step = KerasClientStep(work.model, work.task)
    delta, num_examples, metrics, _ = tf.function(partial(client_loop_steps, step))(
        [tf.constant(w) for w in weights.trainable], [],
        tf.constant(x), tf.constant(y), tf.constant(mask), tf.constant(counts))
    assert num_examples.numpy().tolist() == [7, 5]
    for got, want in zip(delta, expected[0]):
        np.testing.assert_allclose(got.numpy(), want, atol=ATOL)
    for got, want in zip(tf.nest.flatten(metrics), tf.nest.flatten(expected[2])):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fedavg_on_a_cnn_vectorized_equals_sequential_after_three_rounds(momentum):
    from fedsim.execution import make_executor

    data = fedsim.ClientData.from_tensor_slices({f"c{i}": xy for i, xy in enumerate(_population(RAGGED_SIZES[:5]))})

    def run(executor):
        process = fedsim.build_fedavg(
            _cnn_model, client_optimizer=fedsim.SGD(0.1, momentum=momentum), batch_size=BATCH,
            executor_fn=lambda work: make_executor(executor, work))
        result = fedsim.simulate(process, data, 3, fedsim.UniformSampler(cohort_size=4, seed=2), progress=False)
        return process, result.state.model_weights.trainable

    process, got = run("auto")
    assert process.executor.name == "vectorized" and not process.executor.trainer.xla  # convolutions: client loop
    _, expected = run("sequential")
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=ATOL)


@pytest.mark.parametrize("source, target", [(tf.float32, tf.int32), (tf.float32, tf.int16), (tf.int16, tf.float32)])
def test_vectorized_bitcast_equals_the_per_row_bitcast(source, target, caplog):
    import fedsim.execution.cohort_steps  # noqa: F401  (registers the converter)

    values = tf.constant(np.random.default_rng(0).normal(size=(3, 4, 2)), tf.float32)
    values = tf.cast(values * 100, source) if source != tf.float32 else values
    expected = tf.stack([tf.bitcast(v, target) for v in values])
    with caplog.at_level("WARNING"):
        got = tf.function(lambda t: tf.vectorized_map(lambda row: tf.bitcast(row, target), t))(values)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert "Bitcast" not in caplog.text  # converted, not looped
