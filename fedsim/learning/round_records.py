"""The records a round takes and gives: the server state, the round's result, the cohort, and their errors."""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional, Union

import attrs
import tensorflow as tf

from fedsim.models.model_weights import ModelWeights


class ProcessError(ValueError):
    """Raised for a malformed round input (no clients, wrong state, ...)."""


@attrs.frozen
class ServerState:
    """Everything the server carries from one round to the next."""

    round_num: int
    model_weights: ModelWeights
    optimizer_state: Any
    aggregator_state: Any
    # What an algorithm carries beyond model and optimizer (SCAFFOLD's server
    # control variate): a nest of arrays, None for FedAvg and its kin.
    algorithm_state: Any = None


@attrs.frozen
class RoundResult:
    """A round's outcome: the new state, finalized train metrics, aggregator measurements.

    ``metrics`` is empty when the round trained on no example (``num_examples`` 0).
    """

    state: ServerState
    metrics: "collections.OrderedDict[str, Any]"
    measurements: dict[str, float]
    num_clients: int
    num_examples: int


DatasetPrep = Callable[[tf.data.Dataset], tf.data.Dataset]
ClientId = Union[str, int]
# (dataset, round_num, client id) -> (the dataset to train on, how many passes over the
# client's data it makes), or None: the client does not report.
ClientPrep = Callable[[tf.data.Dataset, int, ClientId], Optional[tuple[tf.data.Dataset, int]]]


@attrs.frozen
class Cohort:
    """The clients that train in a round, after per-client preparation and dropouts.

    ``client_ids`` are the ids given to ``next`` or, without them, cohort positions
    (``0 .. n-1``); ``ids_given`` says which, since only real ids are stable across rounds.
    """

    client_ids: list[ClientId]
    datasets: list[tf.data.Dataset]
    ids_given: bool
    passes: Optional[list[int]] = None  # per client, when ``prepare_client`` varies them
