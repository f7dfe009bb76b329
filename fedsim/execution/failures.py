"""The executor contract's shared pieces: defaults for a cohort's inputs and ids, and
per-client failure records for executors that train a cohort in one call."""
from __future__ import annotations

import logging
from typing import Any, Sequence

from fedsim.client.task import NO_INPUTS, ClientFailure

logger = logging.getLogger(__name__)


def isolate_failures(train_cohort: Any, datasets: Sequence[Any], inputs: Sequence[Any], client_ids: Sequence[Any]) -> list:
    """``train_cohort(datasets, inputs)`` for the whole cohort; if it raises, client by client.

    For executors that train a cohort in one call: one failing client must not
    fail the others, so the cohort is run again one client at a time and each
    client yields its output or a ``ClientFailure``.
    """
    try:
        return list(train_cohort(list(datasets), list(inputs)))
    except Exception as error:  # noqa: BLE001 - isolated and reported per client below
        if len(datasets) == 1:
            return [ClientFailure(client_ids[0], error)]
        logger.warning("cohort training failed (%s); running clients one by one", type(error).__name__)
    return [isolate_failures(train_cohort, [d], [i], [c])[0] for d, i, c in zip(datasets, inputs, client_ids)]


def with_defaults(datasets: Sequence[Any], inputs: Any, client_ids: Any) -> tuple[list, list]:
    """``(inputs, client_ids)`` for a cohort: nothing beyond the weights, and cohort positions, unless given."""
    inputs = list(inputs) if inputs is not None else [NO_INPUTS] * len(datasets)
    client_ids = list(client_ids) if client_ids is not None else list(range(len(datasets)))
    return inputs, client_ids
