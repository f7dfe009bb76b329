"""Cross-client metric aggregation: sum the unfinalized values, finalize once on the server.

Averaging already-finalized metrics is wrong whenever clients differ in size
(the mean of per-client accuracies is not the accuracy over all examples), so
fedsim sums each metric's unfinalized state across the cohort and applies the
metric's finalizer once.

Metrics over no examples have no value. A cohort or evaluation that saw no
example (every update zeroed as non-finite, every client empty, an empty
cohort, a test split of nothing) would finalize a zero total over a zero
count, which finalizers turn into 0.0 (Keras's ``divide_no_nan``) or NaN,
and a loss of 0.0 reads as a perfect model. So a metric is finalized only
when its example count is positive, and otherwise dropped (absent: neither
0 nor NaN), while the counts themselves (``COUNT_METRICS``) stay, at 0.
The example count is the summed ``num_examples`` metric (every Keras model
fedsim wraps reports it); a training round knows it from its clients'
outputs (``fedsim.learning.process``), for every model interface, and over
no examples records no train metric at all (its record's ``num_examples`` is 0).
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from fedsim.federated import ClientValues

UnfinalizedMetrics = Mapping[str, Any]
MetricsAggregator = Callable[[Sequence[UnfinalizedMetrics]], "collections.OrderedDict[str, Any]"]


# The metric that counts the examples every other metric was measured on.
EXAMPLE_COUNT = "num_examples"
# Counts are honest over no examples (0), so they are kept when the rest is dropped.
COUNT_METRICS = ("num_examples", "num_batches")


class MetricsError(ValueError):
    """Raised when client metrics cannot be aggregated."""


def example_count(summed: UnfinalizedMetrics) -> Optional[float]:
    """The examples summed metrics were measured on; None when they do not count them."""
    if EXAMPLE_COUNT not in summed:
        return None
    return float(np.sum([np.sum(np.asarray(x)) for x in tf.nest.flatten(summed[EXAMPLE_COUNT])]))


def counts_only(metrics: Mapping[str, Any]) -> "collections.OrderedDict[str, Any]":
    """What is left of a metrics mapping measured on no examples: its counts (``COUNT_METRICS``)."""
    return collections.OrderedDict((k, v) for k, v in metrics.items() if k in COUNT_METRICS)


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


_NESTS = (list, tuple, collections.abc.Mapping)  # the ABC: typing.Mapping checks cost 3x


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
    """Returns an aggregator: sum unfinalized metrics across clients, then finalize each once.

    Over no examples (a summed ``num_examples`` of 0) only the counts are
    finalized; every other metric is absent from the result (see the module
    docstring).
    """
    finalizers = collections.OrderedDict(metric_finalizers)

    def aggregate(client_metrics: Sequence[UnfinalizedMetrics]) -> "collections.OrderedDict[str, Any]":
        summed = sum_unfinalized(client_metrics)
        missing = set(summed) ^ set(finalizers)
        if missing:
            raise MetricsError(
                f"metrics {sorted(missing)} are not in both the clients' unfinalized metrics and "
                "the finalizers; report_local_unfinalized_metrics and metric_finalizers must match"
            )
        if example_count(summed) == 0:
            summed = counts_only(summed)  # 0 / 0 is no value: never run those finalizers
        return collections.OrderedDict(
            (name, _to_numpy(finalizers[name](value))) for name, value in summed.items()
        )

    return aggregate


def federated_output_aggregator(computation: Callable[[ClientValues], Any] | None, key: str) -> MetricsAggregator:
    """The older interface: the model's ``federated_output_computation`` over client-placed outputs.

    When every client's local outputs count their examples (a ``num_examples``
    field) and the count is 0, the computation does not run (its weighted
    means would divide by zero): the result is ``{"num_examples": 0}``.
    """

    def aggregate(client_metrics: Sequence[UnfinalizedMetrics]) -> "collections.OrderedDict[str, Any]":
        if computation is None:
            return collections.OrderedDict()
        local_outputs = [m[key] for m in client_metrics]
        counts = [o.get(EXAMPLE_COUNT) if isinstance(o, Mapping) else None for o in local_outputs]
        if counts and all(c is not None for c in counts) and example_count({EXAMPLE_COUNT: counts}) == 0:
            return collections.OrderedDict([(EXAMPLE_COUNT, np.asarray(0))])
        outputs = ClientValues(local_outputs)
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
