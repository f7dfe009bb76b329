"""Randomness per client and round (issue 15, item 3): Dropout masks come from (run seed, round, client id).

Every executor runs the masks the sequential executor draws (the conformance
matrix's ``mlp_bn_dropout`` model crosses this with every algorithm; Ray's in
``test_ray.py``); here: the masks are the documented ones (a NumPy reference
of one SGD step under the mask drawn from the client's seed), they differ
between clients and rounds, a rerun reproduces them, and XLA, which would
change them, refuses by name.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim import algorithms
from fedsim.client import ClientInputs, ClientWork
from fedsim.client.seeds import client_seed, rng_states
from fedsim.execution import MultiDeviceExecutor, SequentialExecutor, VectorizationError, VectorizedExecutor
from fedsim.execution.vectorized import CohortTrainer
from fedsim.models.enhanced import ModelCheckError
from fedsim.models.model_weights import ModelWeights
from fedsim.optimizers import SGD
from tests.models.toy_models import LinearRegression, regression_clients

FEATURES, CLASSES, RATE, LEARNING_RATE = 6, 3, 0.5, 0.1


def dropout_model():
    """Dropout on the features, then a linear layer: the mask is visible in the gradient."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dropout(RATE), keras.layers.Dense(CLASSES)])
    spec = (tf.TensorSpec([None, FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec)


def client_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, n).astype(np.int32)


def one_batch(data):
    return tf.data.Dataset.from_tensor_slices(data).batch(len(data[0]))


def numpy_sgd_step(weights, x, y, mask):
    """One SGD step of softmax regression on dropped-out features: the delta of (kernel, bias)."""
    kernel, bias = weights
    dropped = x * mask / (1.0 - RATE)
    logits = dropped @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    grad_logits = p / len(y)
    return [-LEARNING_RATE * dropped.T @ grad_logits, -LEARNING_RATE * grad_logits.sum(axis=0)]


def test_rng_states_are_local_variables_not_model_weights():
    model = dropout_model()
    (state,) = model.rng_state_variables
    assert any(state is v for v in model.local_variables)
    assert not any(state is v for v in model.non_trainable_variables)
    assert ModelWeights.from_model(model).non_trainable == ()
    fedsim.enhance(model)  # every held variable is in a collection


def test_a_client_draws_the_mask_of_its_seed():
    """The first draw of a client uses the state derived from (run seed, round, client id)."""
    work = ClientWork(dropout_model(), SGD(LEARNING_RATE))
    weights = ModelWeights.from_model(work.model)
    x, y = client_data()
    seed = client_seed(7, 2, "alice")
    output = work.train(weights, one_batch((x, y)), ClientInputs(seed=seed))
    (state,) = rng_states(seed, work.model.rng_state_variables, [np.zeros(2, np.int64)])
    # Keras's Dropout: stateless_dropout keyed by the generator state (cast to int32), counter unchanged.
    kept = tf.nn.experimental.stateless_dropout(tf.ones_like(x), rate=RATE, seed=state.astype(np.int32)).numpy()
    mask = (kept != 0).astype(np.float32)
    assert 0 < mask.mean() < 1
    expected = numpy_sgd_step([np.asarray(w) for w in weights.trainable], x, y, mask)
    for got, want in zip(output.delta, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_seeds_differ_by_client_round_and_run_and_nothing_else():
    assert client_seed(0, 1, "a") == client_seed(0, 1, "a")
    assert client_seed(0, 1, 3) == client_seed(0, 1, np.int64(3))  # Python and NumPy ids alike
    seeds = {client_seed(run, r, c) for run in (0, 1) for r in (1, 2) for c in ("a", "b", 3)}
    assert len(seeds) == 12
    variables = [tf.Variable([0, 0], dtype=tf.int64), tf.Variable([0, 0], dtype=tf.int64)]
    first, second = rng_states(client_seed(0, 1, "a"), variables, [None, None])
    assert first.dtype == np.int64 and not np.array_equal(first, second)  # two layers, two streams
    assert all(0 <= v < 2**31 - 2 for v in np.concatenate([first, second]))


def _deltas_of_identical_clients(executor_fn):
    """The two deltas of two clients with identical data in round 1 (captured from the executor)."""
    process = algorithms.build_fedavg(dropout_model, SGD(LEARNING_RATE), batch_size=8, executor_fn=executor_fn)
    data = client_data()
    weights = process.initialize().model_weights
    inputs = [ClientInputs(seed=client_seed(0, 1, c)) for c in ("a", "b")]
    outputs = process.executor.train(weights, [one_batch(data)] * 2, inputs, ["a", "b"])
    return [o.delta for o in outputs]


@pytest.mark.parametrize("executor_fn", [
    SequentialExecutor,
    VectorizedExecutor,
    lambda work: MultiDeviceExecutor(work, ["/device:CPU:0", "/device:CPU:0"]),
], ids=["sequential", "vectorized", "multi_device"])
def test_identical_clients_draw_different_masks_on_every_executor(executor_fn):
    deltas = _deltas_of_identical_clients(executor_fn)
    assert not np.allclose(deltas[0][0], deltas[1][0])
    reference = _deltas_of_identical_clients(SequentialExecutor)
    for got, want in zip(deltas, reference):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_rerun_reproduces_the_masks_and_another_run_seed_changes_them():
    def final_weights(seed):
        process = algorithms.build_fedavg(dropout_model, SGD(LEARNING_RATE), batch_size=4, seed=seed)
        data = [tf.data.Dataset.from_tensor_slices(client_data(8, s)) for s in range(3)]
        state = process.initialize()
        for _ in range(2):
            state = process.next(state, data, ["a", "b", "c"]).state
        return state.model_weights.trainable[0]

    np.testing.assert_array_equal(final_weights(0), final_weights(0))
    assert not np.allclose(final_weights(0), final_weights(1))


def test_rounds_draw_different_masks():
    """The same client from the same weights in rounds 1 and 2: different masks, different deltas."""
    work = ClientWork(dropout_model(), SGD(LEARNING_RATE))
    weights = ModelWeights.from_model(work.model)
    dataset = one_batch(client_data())
    rounds = [work.train(weights, dataset, ClientInputs(seed=client_seed(0, r, "a"))).delta[0] for r in (1, 2)]
    assert not np.allclose(rounds[0], rounds[1])


def test_xla_refuses_a_model_that_draws_random_numbers():
    work = ClientWork(dropout_model(), SGD(LEARNING_RATE))
    with pytest.raises(VectorizationError, match="layer 'dropout.*' draws random numbers .*leave xla unset"):
        CohortTrainer(work, xla=True)
    assert CohortTrainer(work).xla is False  # auto: the graph client loop, sequential masks


def test_process_seed_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match=r"seed=-1 must be an int >= 0"):
        algorithms.build_fedavg(dropout_model, SGD(LEARNING_RATE), batch_size=4, seed=-1)


class NoisyRegression(LinearRegression):
    """A hand-written model that adds Gaussian noise to its inputs in training, from a generator it declares."""

    def __init__(self, declare_as_local=True):
        super().__init__()
        self._generator = tf.random.Generator.from_seed(0)
        self._declare_as_local = declare_as_local

    @property
    def local_variables(self):
        return super().local_variables + ([self._generator.state] if self._declare_as_local else [])

    @property
    def non_trainable_variables(self):
        return [] if self._declare_as_local else [self._generator.state]

    @property
    def rng_state_variables(self):
        return [self._generator.state]

    def forward_pass(self, batch, training=True):
        if training:
            batch = dict(batch, x=batch["x"] + self._generator.normal(tf.shape(batch["x"])))
        return super().forward_pass(batch, training)


def test_a_hand_written_model_seeds_the_generators_it_declares():
    (data,) = regression_clients([6])
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(3)
    work = ClientWork(fedsim.enhance(NoisyRegression()), SGD(LEARNING_RATE))
    weights = ModelWeights.from_model(work.model)
    deltas = {c: work.train(weights, dataset, ClientInputs(seed=client_seed(0, 1, c))).delta[0] for c in "aab"}
    assert not np.allclose(deltas["a"], deltas["b"])  # identical data, different noise
    repeat = work.train(weights, dataset, ClientInputs(seed=client_seed(0, 1, "a"))).delta[0]
    np.testing.assert_array_equal(repeat, deltas["a"])  # the same client's noise again, whatever ran between


def test_enhance_refuses_a_generator_state_among_the_model_weights():
    with pytest.raises(ModelCheckError, match="random-generator states must be integer variables listed "
                                                     "in local_variables"):
        fedsim.enhance(NoisyRegression(declare_as_local=False))
