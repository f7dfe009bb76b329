"""Functional optimizers against Keras's optimizers and against steps worked out by hand."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from fedsim.optimizers import SGD, Adagrad, Adam, ExponentialDecay, Yogi

WEIGHTS = [np.array([[0.5, -1.0], [2.0, 0.25]], np.float32), np.array([0.1, -0.3], np.float32)]
GRADIENTS = [
    [np.array([[0.2, -0.4], [1.0, 0.0]], np.float32), np.array([0.5, -0.1], np.float32)],
    [np.array([[-0.3, 0.1], [0.5, 0.7]], np.float32), np.array([0.2, 0.4], np.float32)],
    [np.array([[0.1, 0.9], [-0.2, 0.3]], np.float32), np.array([-0.6, 0.05], np.float32)],
]


def _run_numpy(optimizer):
    state, weights = optimizer.init(WEIGHTS), list(WEIGHTS)
    for gradient in GRADIENTS:
        state, weights = optimizer.next(state, weights, gradient)
    return state, weights


def _run_traced(optimizer):
    """The same steps inside a tf.function, as client work runs them."""

    @tf.function
    def run(weights, gradients):
        state = optimizer.init(weights)
        for gradient in gradients:
            state, weights = optimizer.next(state, weights, gradient)
        return state, weights

    state, weights = run([tf.constant(w) for w in WEIGHTS], [[tf.constant(g) for g in gs] for gs in GRADIENTS])
    return tf.nest.map_structure(np.asarray, state), [w.numpy() for w in weights]


def _run_keras(optimizer):
    variables = [keras.Variable(w) for w in WEIGHTS]
    for gradient in GRADIENTS:
        optimizer.apply_gradients(zip([tf.constant(g) for g in gradient], variables))
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("run", [_run_numpy, _run_traced])
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: SGD(0.1), lambda: keras.optimizers.SGD(0.1)),
        (lambda: SGD(0.1, momentum=0.9), lambda: keras.optimizers.SGD(0.1, momentum=0.9)),
        (lambda: SGD(0.1, 0.9, nesterov=True), lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)),
        (lambda: Adam(0.05), lambda: keras.optimizers.Adam(0.05)),
        (lambda: Adam(0.05, 0.5, 0.8, 1e-3), lambda: keras.optimizers.Adam(0.05, 0.5, 0.8, 1e-3)),
    ],
)
def test_matches_keras(run, ours, theirs):
    _, weights = run(ours())
    for a, b in zip(weights, _run_keras(theirs())):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_yogi_first_step_by_hand():
    g = GRADIENTS[0]
    optimizer = Yogi(0.1, beta_1=0.9, beta_2=0.99, epsilon=1e-3, initial_accumulator=0.5, bias_correction=False)
    state, weights = optimizer.next(optimizer.init(WEIGHTS), WEIGHTS, g)
    # v0 = 0.5 everywhere: v1 = v0 - 0.01 g^2 sign(v0 - g^2); m1 = 0.1 g.
    g_kernel = g[0].astype(np.float64)
    v1 = 0.5 - 0.01 * g_kernel**2 * np.sign(0.5 - g_kernel**2)
    assert v1[1, 0] == pytest.approx(0.5 + 0.01)  # g = 1.0 > sqrt(v): v grows
    np.testing.assert_allclose(state["v"][0], v1, rtol=1e-6)
    np.testing.assert_allclose(weights[0], WEIGHTS[0] - 0.1 * (0.1 * g_kernel) / (np.sqrt(v1) + 1e-3), rtol=1e-6)
    assert int(state["step"]) == 1


def test_yogi_bias_correction_scales_the_rate_like_adam():
    plain = Yogi(0.1, 0.9, 0.99, 1e-3, 0.5, bias_correction=False)
    corrected = Yogi(0.1 * np.sqrt(1 - 0.99) / (1 - 0.9), 0.9, 0.99, 1e-3, 0.5, bias_correction=False)
    _, expected = corrected.next(corrected.init(WEIGHTS), WEIGHTS, GRADIENTS[0])
    _, got = Yogi(0.1, 0.9, 0.99, 1e-3, 0.5).next(plain.init(WEIGHTS), WEIGHTS, GRADIENTS[0])
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("run", [_run_numpy, _run_traced])
def test_adagrad_three_steps_by_hand(run):
    state, weights = run(Adagrad(0.2, epsilon=0.01, initial_accumulator=0.1))
    v = [np.full(w.shape, 0.1) for w in WEIGHTS]
    w = [x.astype(np.float64) for x in WEIGHTS]
    for gradient in GRADIENTS:
        v = [a + g.astype(np.float64) ** 2 for a, g in zip(v, gradient)]
        w = [x - 0.2 * g / (np.sqrt(a) + 0.01) for x, g, a in zip(w, gradient, v)]
    for got, want in zip(weights, w):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    for got, want in zip(state["v"], v):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert "m" not in state and int(state["step"]) == 3


@pytest.mark.parametrize("run", [_run_numpy, _run_traced])
def test_schedule_gives_each_step_its_rate(run):
    schedule = ExponentialDecay(0.1, 0.5)
    state, weights = run(SGD(schedule))
    expected = WEIGHTS[1].astype(np.float64)
    for round_num, gradient in enumerate(GRADIENTS, start=1):
        expected = expected - 0.1 * 0.5 ** (round_num - 1) * gradient[1]
    np.testing.assert_allclose(weights[1], expected, rtol=1e-6)
    assert int(state["step"]) == 3


@pytest.mark.parametrize("optimizer", [SGD(0.1, 0.9), SGD(ExponentialDecay(0.1, 0.9)), Adam(), Yogi(), Adagrad(beta_1=0.5)])
def test_server_state_is_a_nest_of_arrays_keeping_the_weights_dtype(optimizer):
    state, weights = _run_numpy(optimizer)
    for leaf in tf.nest.flatten(state):
        assert isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype in (np.float32, np.int64)
    assert all(w.dtype == np.float32 for w in weights)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: SGD(-0.1), "learning_rate=-0.1"),
        (lambda: SGD("fast"), "schedule"),
        (lambda: Adam(beta_1=1.0), "beta_1=1.0"),
        (lambda: Yogi(epsilon=-1), "epsilon=-1"),
    ],
)
def test_bad_parameters_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()
