"""Evaluating a model on clients: each client's unfinalized metrics, with its own non-trainable weights if it keeps them."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import tensorflow as tf

from fedsim.learning import non_trainable as nt_rule
from fedsim.learning.round_records import ClientId
from fedsim.models.model_weights import ModelWeights


def evaluate_clients(
    executor: Any,
    model_weights: ModelWeights,
    datasets: Sequence[tf.data.Dataset],
    client_ids: Optional[Sequence[ClientId]] = None,
    non_trainable_store: Any = None,
) -> list:
    """Each client's unfinalized metrics of ``model_weights`` on its (prepared) dataset, in the order given.

    A client (by ``client_ids``) with non-trainable weights of its own in
    ``non_trainable_store`` (FedBN) is evaluated with them, one by one; the
    others with the server's, together.
    """
    own = [None] * len(datasets)
    if non_trainable_store is not None and client_ids is not None:
        own = [nt_rule.start_values(non_trainable_store, c, None) for c in client_ids]
    shared = [i for i, o in enumerate(own) if o is None]
    metrics = [None] * len(datasets)
    if shared:
        for i, values in zip(shared, executor.evaluate(model_weights, [datasets[i] for i in shared])):
            metrics[i] = values
    for i, values in enumerate(own):
        if values is not None:
            metrics[i] = executor.evaluate(model_weights.with_non_trainable(values), [datasets[i]])[0]
    return metrics
