"""Learning-rate schedules: values at given rounds, worked out by hand, on floats and tensors."""
import numpy as np
import pytest
import tensorflow as tf

from fedsim.optimizers import Constant, ExponentialDecay, InverseSqrtDecay, WarmupThenDecay

CASES = [
    (Constant(0.3), [1, 7], [0.3, 0.3]),
    (ExponentialDecay(1.0, 0.5, decay_rounds=2), [1, 2, 3, 5], [1.0, 0.5**0.5, 0.5, 0.25]),
    (ExponentialDecay(1.0, 0.5, decay_rounds=2, staircase=True), [1, 2, 3, 4], [1.0, 1.0, 0.5, 0.5]),
    (InverseSqrtDecay(0.2), [1, 4, 10], [0.2, 0.1, 0.2 / np.sqrt(10)]),
    (WarmupThenDecay(4, InverseSqrtDecay(0.2)), [1, 2, 4, 5, 8], [0.05, 0.1, 0.2, 0.2, 0.1]),
]


@pytest.mark.parametrize("schedule, rounds, expected", CASES)
def test_values_on_floats(schedule, rounds, expected):
    np.testing.assert_allclose([schedule(float(r)) for r in rounds], expected, rtol=1e-12)


@pytest.mark.parametrize("schedule, rounds, expected", CASES)
def test_values_on_float_tensors_in_a_graph(schedule, rounds, expected):
    values = tf.function(lambda r: schedule(r))(tf.constant(rounds, tf.float32))
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-6)


def test_warmup_rejects_a_non_schedule():
    with pytest.raises(ValueError, match="after_warmup=0.1"):
        WarmupThenDecay(3, 0.1)
