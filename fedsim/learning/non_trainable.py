"""What happens to non-trainable model weights (BatchNorm statistics, frozen layers) in a round.

Clients change non-trainable weights while they train (BatchNorm's moving
mean and variance); the server never trains them. One rule per run says what
becomes of the clients' values:

- ``"keep"`` (default, TensorFlow Federated's behaviour): the server's values
  stay as they are; what clients computed is discarded. Evaluation uses the
  server's values, so a BatchNorm model is evaluated with its initial
  statistics (0 and 1) unless they were set otherwise; building such a model
  under this rule warns once.
- ``"average"``: each client sends the change of its non-trainable weights
  beside its delta, through the aggregator chain (clipping, DP and robust
  rules see it too), and the server adds the aggregate, weighted like the
  deltas: for BatchNorm, the cohort's statistics, FedAvg-style.
- ``"per_client"`` (FedBN, Li et al. 2021, "FedBN: Federated Learning on
  Non-IID Features via Local Batch Normalization", ICLR): each client keeps
  its own values in a client store and starts from them in its next round
  (the server's values the first time); the server's values never change.
  Evaluation gives a client with stored values its own, others the server's.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Optional, Sequence

import attrs
import numpy as np

logger = logging.getLogger(__name__)

NON_TRAINABLE_RULES = ("keep", "average", "per_client")
# The message extra that carries a client's change of its non-trainable weights (rule "average").
EXTRA = "non_trainable_delta"


def check_rule(rule: Any) -> str:
    """``rule`` if it is one of ``NON_TRAINABLE_RULES``, else a ValueError naming it."""
    if rule not in NON_TRAINABLE_RULES:
        raise ValueError(
            f"non_trainable={rule!r} must be one of {list(NON_TRAINABLE_RULES)}: keep the server's "
            "values (TFF's behaviour), average the clients' like deltas, or keep them per client (FedBN)"
        )
    return rule


def batch_statistics_layers(model: Any) -> list[str]:
    """Names of the Keras layers of ``model`` that keep batch statistics as non-trainable weights."""
    keras_model = getattr(model, "keras_model", None)
    if keras_model is None:
        return []
    return [
        layer.name
        for layer in keras_model._flatten_layers()  # noqa: SLF001  (Keras's own layer walk)
        if any("BatchNormalization" in cls.__name__ for cls in type(layer).__mro__)
    ]


def warn_if_statistics_are_kept(model: Any, rule: str) -> None:
    """One warning when a model with batch statistics runs under ``"keep"``, naming the alternatives."""
    layers = batch_statistics_layers(model)
    if rule != "keep" or not layers:
        return
    warnings.warn(
        f"layers {layers} keep batch statistics (non-trainable weights), and under the rule "
        "non_trainable='keep' (TFF's behaviour, the default) the server keeps its own values: the "
        "clients' statistics are discarded and evaluation uses the initial ones. Choose "
        "non_trainable='average' (the cohort's statistics, averaged like deltas) or 'per_client' "
        "(FedBN: each client keeps its own)",
        UserWarning,
        stacklevel=3,
    )


def with_changes(messages: Sequence[Any], outputs: Sequence[Any], start: Sequence[np.ndarray]) -> list:
    """Rule ``"average"``: each client's message with the change of its non-trainable weights as an extra.

    ``start`` is what every client started from (the server's values).
    """
    return [
        attrs.evolve(m, extras={**m.extras, EXTRA: [np.asarray(f) - np.asarray(s) for f, s in zip(o.non_trainable, start)]})
        for m, o in zip(messages, outputs)
    ]


def with_change(model_weights: Any, aggregate: Sequence[np.ndarray]) -> Any:
    """Rule ``"average"``: the model weights with the aggregated change added to the non-trainable ones.

    Integer weights (counters) are rounded back to their dtype.
    """
    result = []
    for value, delta in zip(model_weights.non_trainable, aggregate):
        value = np.asarray(value)
        summed = value + np.asarray(delta)
        result.append((np.rint(summed) if np.issubdtype(value.dtype, np.integer) else summed).astype(value.dtype))
    return model_weights.with_non_trainable(result)


def keep_own(store: Any, client_ids: Sequence[Any], outputs: Sequence[Any], update_weights: Sequence[float],
             round_num: int) -> None:
    """Rule ``"per_client"``: stores each client's values after training (a zeroed or empty client keeps its old)."""
    for client_id, output, weight in zip(client_ids, outputs, update_weights):
        if weight > 0:
            store.put(client_id, output.non_trainable, round_num)


def start_values(store: Any, client_id: Any, round_num: int) -> Optional[list[np.ndarray]]:
    """Rule ``"per_client"``: the values a client starts from (None: the server's, its first time)."""
    stored = store.get(client_id, before_round=round_num)
    return None if stored is None else [np.asarray(a) for a in stored]
