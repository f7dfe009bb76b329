"""Evaluate model weights on the clients of a population, one client at a time.

The aggregate is sum-then-finalize over all evaluated clients (the metric
over all their examples); the distribution summarizes each scalar metric's
per-client values (finalized per client), so fairness shows: mean, standard
deviation, 10th/50th/90th percentiles, and the worst client with its id.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
import numpy as np
import tensorflow as tf

from fedsim.data import ClientData
from fedsim.metrics import metrics_aggregator_for, to_python
from fedsim.models.model_weights import ModelWeights


@attrs.frozen
class MetricDistribution:
    """The spread of one scalar metric across clients."""

    mean: float
    std: float
    p10: float
    p50: float
    p90: float
    worst: float
    worst_client: str


@attrs.frozen
class FederatedEvaluation:
    """Aggregate metrics, per-client metrics and each scalar metric's distribution."""

    aggregate: dict[str, Any]
    per_client: dict[str, dict[str, Any]]
    distributions: dict[str, MetricDistribution]


def _lower_is_better(name: str) -> bool:
    return "loss" in name or "error" in name


def evaluate_federated(
    process: Any,
    model_weights: ModelWeights,
    client_data: ClientData,
    num_clients: Optional[int] = None,
    seed: int = 0,
    lower_is_better: Optional[Mapping[str, bool]] = None,
) -> FederatedEvaluation:
    """Evaluates ``model_weights`` on every client of ``client_data`` (or a seeded sample).

    Args:
      process: a built process; its ``evaluate_clients`` and model's metrics are used.
      num_clients: evaluate a sample of this many clients, drawn from ``seed``; None: all.
      lower_is_better: per metric name, whether a lower value is better (decides the
        worst client); default: names containing "loss" or "error" are, others are not.
    """
    ids = list(client_data.client_ids)
    if num_clients is not None:
        if not 0 < num_clients <= len(ids):
            raise ValueError(
                f"num_clients={num_clients} must be in [1, {len(ids)}] (the population size)"
            )
        chosen = np.random.default_rng(seed).choice(len(ids), num_clients, replace=False)
        ids = [ids[i] for i in sorted(chosen)]
    datasets = [client_data.create_tf_dataset_for_client(c) for c in ids]
    unfinalized = process.evaluate_clients(model_weights, datasets, ids)
    aggregate_fn = metrics_aggregator_for(process.model)
    # A client without examples has no metric of its own (0 / 0): it counts in the aggregate only.
    evaluated = [(c, m) for c, m in zip(ids, unfinalized) if _num_examples(m) != 0]
    per_client = {c: to_python(dict(aggregate_fn([m]))) for c, m in evaluated}
    directions = dict(lower_is_better or {})
    distributions = {}
    for name, value in (per_client[evaluated[0][0]] if evaluated else {}).items():
        if not isinstance(value, (int, float)):
            continue
        names = [c for c, _ in evaluated]
        values = np.array([per_client[c][name] for c in names], dtype=np.float64)
        lower = directions.get(name, _lower_is_better(name))
        worst_index = int(np.argmax(values) if lower else np.argmin(values))
        distributions[name] = MetricDistribution(
            mean=float(values.mean()),
            std=float(values.std()),
            p10=float(np.percentile(values, 10)),
            p50=float(np.percentile(values, 50)),
            p90=float(np.percentile(values, 90)),
            worst=float(values[worst_index]),
            worst_client=str(names[worst_index]),
        )
    return FederatedEvaluation(
        to_python(dict(aggregate_fn(unfinalized))), per_client, distributions
    )


def _num_examples(unfinalized: Mapping[str, Any]) -> Optional[float]:
    """The client's example count, when its metrics carry one (None: unknown, so evaluated)."""
    value = unfinalized.get("num_examples")
    return None if value is None else float(np.sum(value))


def evaluate_centralized(
    process: Any, model_weights: ModelWeights, dataset: tf.data.Dataset
) -> dict[str, Any]:
    """Metrics of ``model_weights`` on one pooled test set (e.g. ``create_tf_dataset_from_all_clients()``)."""
    return to_python(dict(process.evaluate(model_weights, [dataset])))
