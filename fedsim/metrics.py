"""Cross-client metric aggregation: sum the unfinalized values, finalize once on the server.

Averaging already-finalized metrics is wrong whenever clients differ in size
(the mean of per-client accuracies is not the accuracy over all examples), so
fedsim sums each metric's unfinalized state across the cohort and applies the
metric's finalizer once.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from fedsim.federated import ClientValues

UnfinalizedMetrics = Mapping[str, Any]
MetricsAggregator = Callable[[Sequence[UnfinalizedMetrics]], "collections.OrderedDict[str, Any]"]


class MetricsError(ValueError):
    """Raised when client metrics cannot be aggregated."""


def sum_unfinalized(client_metrics: Sequence[UnfinalizedMetrics]) -> "collections.OrderedDict[str, Any]":
    """Sums each metric's unfinalized values across clients, leaf by leaf.

    A metric's value may be any nest of lists, tuples and dicts of arrays;
    every client must report the same nest with the same leaf shapes.
    """
    if not client_metrics:
        raise MetricsError("no client metrics to sum: the cohort reported nothing")
    names = list(client_metrics[0])
    for index, metrics in enumerate(client_metrics[1:], start=1):
        if list(metrics) != names:
            raise MetricsError(
                f"client {index} reported metrics {list(metrics)}, client 0 reported {names}; "
                "every client must run the same model"
            )
    return collections.OrderedDict(
        (name, _sum_metric(name, [m[name] for m in client_metrics])) for name in names
    )


def _sum_metric(name: str, values: Sequence[Any]) -> Any:
    if not all(_is_flat_list(v) and len(v) == len(values[0]) for v in values):
        _check_same_structure(name, values)
        return tf.nest.map_structure(lambda *xs: _sum_leaf(xs), *values)
    # The common shape (a Keras metric's state variables): skip tf.nest's
    # per-call cost, which is most of a small model's metric summing.
    try:
        return [_sum_leaf(xs) for xs in zip(*values)]
    except ValueError:  # np.stack refuses leaves of different shapes: name them
        _check_same_structure(name, values)
        raise


_NESTS = (list, tuple, Mapping)


def _is_flat_list(value: Any) -> bool:
    if type(value) is not list:
        return False
    for x in value:  # a plain loop: a generator costs more than the check
        if isinstance(x, _NESTS):
            return False
    return True


def _check_same_structure(name: str, values: Sequence[Any]) -> None:
    structures = [_structure(v) for v in values]
    for index, structure in enumerate(structures[1:], start=1):
        if structure != structures[0]:
            raise MetricsError(
                f"metric {name!r}: client 0 reported {structures[0]}, client {index} reported {structure}; "
                "every client must report the same structure (nesting and leaf shapes) for a metric"
            )


def _structure(value: Any) -> Any:
    """The value's nesting with each leaf replaced by ``'shape (...)'``."""
    return tf.nest.map_structure(lambda x: f"shape {np.shape(x)}", value)


def _sum_leaf(values: Sequence[Any]) -> np.ndarray:
    return np.sum(np.stack([np.asarray(x) for x in values]), axis=0)


def sum_then_finalize(metric_finalizers: Mapping[str, Callable[[Any], Any]]) -> MetricsAggregator:
    """Returns an aggregator: sum unfinalized metrics across clients, then finalize each once."""
    finalizers = collections.OrderedDict(metric_finalizers)

    def aggregate(client_metrics: Sequence[UnfinalizedMetrics]) -> "collections.OrderedDict[str, Any]":
        summed = sum_unfinalized(client_metrics)
        missing = set(summed) ^ set(finalizers)
        if missing:
            raise MetricsError(
                f"metrics {sorted(missing)} are not in both the clients' unfinalized metrics and "
                "the finalizers; report_local_unfinalized_metrics and metric_finalizers must match"
            )
        return collections.OrderedDict(
            (name, _to_numpy(finalizers[name](value))) for name, value in summed.items()
        )

    return aggregate


def federated_output_aggregator(computation: Callable[[ClientValues], Any] | None, key: str) -> MetricsAggregator:
    """The older interface: the model's ``federated_output_computation`` over client-placed outputs."""

    def aggregate(client_metrics: Sequence[UnfinalizedMetrics]) -> "collections.OrderedDict[str, Any]":
        if computation is None:
            return collections.OrderedDict()
        outputs = ClientValues([m[key] for m in client_metrics])
        result = computation(outputs)
        if isinstance(result, Mapping):
            return collections.OrderedDict((k, _to_numpy(v)) for k, v in result.items())
        return collections.OrderedDict(value=_to_numpy(result))

    return aggregate


def metrics_aggregator_for(model: Any) -> MetricsAggregator:
    """The cross-client aggregator a model asks for: its own computation, or sum-then-finalize."""
    if getattr(model, "uses_federated_output_computation", False):
        from fedsim.models.legacy import LegacyModelAdapter

        return federated_output_aggregator(
            model.federated_output_computation, LegacyModelAdapter.LOCAL_OUTPUTS_KEY
        )
    return sum_then_finalize(model.metric_finalizers())


def _to_numpy(value: Any) -> Any:
    return tf.nest.map_structure(lambda v: np.asarray(v), value)


def to_python(value: Any) -> Any:
    """Finalized metrics as JSON-ready Python numbers and lists."""
    return tf.nest.map_structure(lambda v: np.asarray(v).tolist(), value)
