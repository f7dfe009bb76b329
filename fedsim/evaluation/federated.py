"""Evaluate model weights on the clients of a population, one client at a time.

The aggregate is sum-then-finalize over all evaluated clients (the metric
over all their examples); the distribution summarizes each scalar metric's
per-client values (finalized per client), so fairness shows: mean, standard
deviation, 10th/50th/90th percentiles, and the worst client with its id.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf

from fedsim.data import ClientData
from fedsim.data.sources import ClientRecipe, RecipeStepError
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
    client_ids: Optional[Sequence[str]] = None,
) -> FederatedEvaluation:
    """Evaluates ``model_weights`` on every client of ``client_data`` (or a seeded sample).

    Where the process's executor builds clients in its workers (Ray actors, from
    the population's ``client_source``), the clients travel as ``ClientRecipe``
    values (a few hundred bytes), not as exported datasets.

    Args:
      process: a built process; its ``evaluate_clients`` and model's metrics are used.
      num_clients: evaluate a sample of this many clients, drawn from ``seed``; None: all.
      client_ids: evaluate exactly these clients of ``client_data`` (not with ``num_clients``).
      lower_is_better: per metric name, whether a lower value is better (decides the
        worst client); default: names containing "loss" or "error" are, others are not.
    """
    if client_ids is not None and num_clients is not None:
        raise ValueError("pass num_clients (a seeded sample) or client_ids (the clients), not both")
    ids = list(client_data.client_ids if client_ids is None else client_ids)
    if num_clients is not None:
        if not 0 < num_clients <= len(ids):
            raise ValueError(
                f"num_clients={num_clients} must be in [1, {len(ids)}] (the population size)"
            )
        chosen = np.random.default_rng(seed).choice(len(ids), num_clients, replace=False)
        ids = [ids[i] for i in sorted(chosen)]
    unfinalized = process.evaluate_clients(model_weights, _client_datasets(process, client_data, ids), ids)
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


def _client_datasets(process: Any, client_data: ClientData, ids: Sequence[str]) -> list:
    """Each client's dataset, or its ``ClientRecipe`` when the executor's workers build the
    population's clients themselves and the process's evaluation batching records on a recipe."""
    builds = getattr(getattr(process, "executor", None), "builds_evaluation_clients", None)
    source = client_data.client_source
    if ids and builds is not None and builds(source):
        spec = client_data.element_type_structure
        recipes = [ClientRecipe.start(source, c, spec) for c in ids]
        try:
            process.prepare_eval(recipes[0])
            return recipes
        except RecipeStepError:  # a preparation step recipes do not record: the driver builds them
            pass
    return [client_data.create_tf_dataset_for_client(c) for c in ids]


def _num_examples(unfinalized: Mapping[str, Any]) -> Optional[float]:
    """The client's example count, when its metrics carry one (None: unknown, so evaluated)."""
    value = unfinalized.get("num_examples")
    return None if value is None else float(np.sum(value))


def evaluate_centralized(
    process: Any, model_weights: ModelWeights, dataset: tf.data.Dataset
) -> dict[str, Any]:
    """Metrics of ``model_weights`` on one pooled test set (e.g. ``create_tf_dataset_from_all_clients()``)."""
    return to_python(dict(process.evaluate(model_weights, [dataset])))
