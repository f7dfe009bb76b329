"""A Keras model's metrics under sum-then-finalize: building them, and their finalizers.

A client reports each metric's variables (unfinalized); the server sums them
over the cohort and finalizes once. The finalizers here turn summed values
into the metric's result, in NumPy where the metric is a plain Mean or Sum.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from fedsim.models.keras_outputs import KerasModelError


def _keras_result(unfinalized: Sequence[Any], metric: keras.metrics.Metric) -> np.ndarray:
    # Stateless: the summed values stand in for the metric's variables, which
    # stay the client's; no copy of the metric is needed (a copy from its
    # config would be unbuilt, and custom metrics may have no full config).
    return np.asarray(metric.stateless_result(list(unfinalized)))


def _numpy_dtype(metric: keras.metrics.Metric) -> Optional[np.dtype]:
    try:
        return np.dtype(metric.dtype)
    except TypeError:  # e.g. bfloat16: NumPy has no such type
        return None


def metric_finalizer(metric: keras.metrics.Metric) -> Callable[[Sequence[Any]], np.ndarray]:
    """The metric's finalizer: NumPy for unmodified Mean/Sum results, else the metric's ``result()``.

    Running ``result()`` costs a few eager TensorFlow ops per metric and round
    (about a millisecond for a small model's whole round); Mean and Sum (and
    their subclasses that keep ``result``, such as the accuracies) are one
    float division or cast, done here with the same dtype and the same
    ``divide_no_nan`` rule.
    """
    dtype = _numpy_dtype(metric)
    result = type(metric).result
    if dtype is not None and result is keras.metrics.Mean.result and len(metric.variables) == 2:
        return partial(_mean_result, dtype=dtype)
    if dtype is not None and result is keras.metrics.Sum.result and len(metric.variables) == 1:
        return partial(_sum_result, dtype=dtype)
    return partial(_keras_result, metric=metric)


def _mean_result(unfinalized: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    total, count = (np.asarray(u, dtype=dtype) for u in unfinalized)
    return np.asarray(total / count if count != 0 else np.zeros_like(total))


def _sum_result(unfinalized: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    return np.asarray(unfinalized[0], dtype=dtype)


def mean_finalizer(unfinalized: Sequence[Any]) -> np.ndarray:
    total, count = (np.asarray(u, dtype=np.float64) for u in unfinalized)
    return np.asarray(total / count if count else 0.0, dtype=np.float32)


def sum_finalizer(unfinalized: Sequence[Any]) -> np.ndarray:
    return np.asarray(unfinalized[0])


def build_metric(metric, y_true, y_pred):
    try:
        # Sample weight 0: creates the variables and leaves them in their initial state.
        metric.update_state(y_true, y_pred, sample_weight=tf.zeros([1]))
    except Exception as error:  # noqa: BLE001 - any failure of the user's metric, reported with the fix
        raise KerasModelError(
            f"metric {metric.name!r} ({type(metric).__name__}) creates its variables at its first update, "
            f"and that update failed on a zero example (labels shaped {y_true.shape}, predictions "
            f"{y_pred.shape}, sample weight 0): {error}. Build it before wrapping: update it once on a "
            "real batch and call its reset_state()"
        ) from error


def warn_non_zero_starts(named_metrics):
    for name, metric in named_metrics:
        non_zero = [v.name for v in metric.variables if np.any(np.asarray(v) != 0)]
        if non_zero:
            warnings.warn(
                f"metric {name!r} ({type(metric).__name__}) does not start from zero: reset_state() "
                f"sets {non_zero} to non-zero values. fedsim sums unfinalized metric values over the "
                "cohort (sum-then-finalize), so its cohort value sums every client's state, start "
                "included, and is not its value over the pooled examples. Give the metric a state that "
                "sums (zero at reset), or aggregate it with a model's own federated_output_computation "
                "(fedsim.models.Model)",
                UserWarning,
                stacklevel=4,
            )
