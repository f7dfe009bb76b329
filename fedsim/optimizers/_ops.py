"""The few non-arithmetic operations optimizers need, on tf tensors or NumPy values.

Optimizers run inside a client's traced loop (tf tensors) and on the server
(NumPy arrays); arithmetic operators work on both, these helpers pick the
matching library for everything else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def sign(x: Any) -> Any:
    return tf.sign(x) if tf.is_tensor(x) else np.sign(x)


def new_step_counter(like: Any) -> Any:
    """A zero int64 update counter: a tensor inside a traced loop, a NumPy scalar on the server."""
    if tf.is_tensor(like):
        return tf.constant(0, tf.int64)
    return np.asarray(0, dtype=np.int64)


def as_float(step: Any, like: Any) -> Any:
    """``step`` as a float of ``like``'s dtype, so ``lr * weights`` keeps the weights' dtype."""
    if tf.is_tensor(step) or tf.is_tensor(like):
        return tf.cast(step, like.dtype)
    # A Python float: NumPy treats it as weakly typed, so float32 weights stay float32.
    return float(step)


def select(condition: Any, if_true: Any, if_false: Any) -> Any:
    if tf.is_tensor(condition):
        return tf.where(condition, if_true, if_false)
    return if_true if condition else if_false
