"""What an algorithm is: the blocks it plugs into the one round.

An ``Algorithm`` is a record of small pure functions (as in FedJAX), each
with explicit state in and out; the round (``fedsim.learning.process``) calls
them in a fixed order and never lets an algorithm run a round of its own:

1. ``broadcast(state, client_state) -> ClientInputs``: what one client
   receives beyond the model weights (SCAFFOLD's ``c - c_i``, Mime's
   optimizer state); ``client_state`` is the client's entry in the client
   store (None when it has none yet, or when the algorithm keeps none).
2. The executor runs the ``task`` (``ClientTask``) on every client.
3. ``message(output, inputs, client_state) -> ClientMessage``: what leaves the
   client: the value in the delta slot, named extras, and the client's new
   state. Every array of the message goes through the fault policy and the
   aggregator chain, so DP, compression, robust rules and the bit count see
   extras too.
4. ``server_update(state, aggregate) -> ServerStep``: from the aggregated
   message, the delta the server optimizer applies, the new algorithm state
   and measurements.

FedAvg is the record with every default.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
import numpy as np

from fedsim.client.task import NO_INPUTS, ClientInputs, ClientOutput, ClientTask
from fedsim.models.model_weights import ModelWeights

Arrays = list[np.ndarray]


@attrs.frozen
class ClientMessage:
    """What leaves one client: ``delta`` (aggregated into the server delta), named ``extras``,
    and ``client_state`` (kept in the client store when the message is accepted; None: unchanged)."""

    delta: Arrays
    extras: dict[str, Arrays] = attrs.field(factory=dict)
    client_state: Optional[Arrays] = None


@attrs.frozen
class Aggregate:
    """The aggregator chain's output, split back into the message's parts.

    ``num_clients`` counts the clients whose message carried a positive update
    weight (the ``S`` of SCAFFOLD's ``|S|/N``).
    """

    delta: Arrays
    extras: dict[str, Arrays]
    num_clients: int


@attrs.frozen
class ServerStep:
    """What the server does with an aggregate: ``delta`` for the server optimizer, the new
    algorithm state, and measurements for the round's record."""

    delta: Arrays
    algorithm_state: Any = None
    measurements: dict[str, float] = attrs.field(factory=dict)


def no_state(model_weights: ModelWeights) -> Any:
    """The algorithm state of an algorithm that keeps none."""
    return None


def no_inputs(state: Any, client_state: Optional[Arrays]) -> ClientInputs:
    """Clients receive the model weights only."""
    return NO_INPUTS


def delta_message(output: ClientOutput, inputs: ClientInputs, client_state: Optional[Arrays]) -> ClientMessage:
    """The client sends its delta (FedAvg)."""
    return ClientMessage(output.delta)


def apply_delta(state: Any, aggregate: Aggregate) -> ServerStep:
    """The server optimizer applies the aggregate delta (FedAvg)."""
    return ServerStep(aggregate.delta, state.algorithm_state)


@attrs.frozen
class Algorithm:
    """An algorithm as blocks of the one round (see the module docstring).

    Attributes:
      name: the algorithm's registry name.
      task: how clients train locally.
      init_state: model weights -> the initial ``ServerState.algorithm_state``.
      broadcast, message, server_update: the round's hooks (module docstring).
      client_state: the algorithm keeps state per client across rounds
        (the process's client store), so rounds need real client ids.
      one_batch: clients train on their whole dataset as one batch, once
        (FedSGD), so batch size and local epochs do not apply.
      keep_partial_work: a simulated straggler reports the epochs it finished
        (FedProx's inexact solvers) instead of being dropped.
    """

    name: str
    task: ClientTask
    init_state: Callable[[ModelWeights], Any] = no_state
    broadcast: Callable[[Any, Optional[Arrays]], ClientInputs] = no_inputs
    message: Callable[[ClientOutput, ClientInputs, Optional[Arrays]], ClientMessage] = delta_message
    server_update: Callable[[Any, Aggregate], ServerStep] = apply_delta
    client_state: bool = False
    one_batch: bool = False
    keep_partial_work: bool = False


def population_size_check(name: str, population_size: Any) -> int:
    """``population_size`` as an int >= 1, or a ValueError naming the algorithm."""
    if isinstance(population_size, bool) or not isinstance(population_size, (int, np.integer)) or population_size < 1:
        raise ValueError(
            f"{name} needs population_size >= 1 (the number of clients N in the population), "
            f"got {population_size!r}"
        )
    return int(population_size)
