"""The simple executor: clients one after another, in this process."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from fedsim.client import ClientFailure, ClientWork
from fedsim.execution.failures import with_defaults


class SequentialExecutor:
    """Runs each client's work in turn with one compiled ``ClientWork``; the reference path."""

    name = "sequential"

    def __init__(self, client_work: ClientWork):
        self.client_work = client_work

    def train(
        self,
        model_weights: Any,
        datasets: Sequence[Any],
        inputs: Optional[Sequence[Any]] = None,
        client_ids: Optional[Sequence[Any]] = None,
    ) -> list:
        """Per client, in order, its ``ClientOutput`` or a ``ClientFailure``."""
        inputs, client_ids = with_defaults(datasets, inputs, client_ids)
        results = []
        for dataset, client_inputs, client_id in zip(datasets, inputs, client_ids):
            try:
                results.append(self.client_work.train(model_weights, dataset, client_inputs))
            except Exception as error:  # noqa: BLE001 - the round's fault policy decides
                results.append(ClientFailure(client_id, error))
        return results

    def evaluate(self, model_weights: Any, datasets: Sequence[Any]) -> list:
        return [self.client_work.evaluate(model_weights, dataset) for dataset in datasets]
