"""Federated evaluation: the global model on every client, and the spread across clients."""

from fedsim.evaluation.federated import (
    FederatedEvaluation,
    MetricDistribution,
    evaluate_centralized,
    evaluate_federated,
)

__all__ = [
    "FederatedEvaluation",
    "MetricDistribution",
    "evaluate_centralized",
    "evaluate_federated",
]
