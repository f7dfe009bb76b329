"""Aggregators: combine client deltas into one server delta (see ``base``)."""
from fedsim.aggregators.base import (
    AggregationError,
    AggregationOutput,
    Aggregator,
    check_client_values,
    weighted_sum,
)
from fedsim.aggregators.mean import MeanAggregator

__all__ = [
    "AggregationError",
    "AggregationOutput",
    "Aggregator",
    "MeanAggregator",
    "check_client_values",
    "weighted_sum",
]
