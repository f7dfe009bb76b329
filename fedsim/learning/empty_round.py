"""What a round without clients aggregates: a stand-in message of zeros in every client's layout.

A privacy mechanism releases its noise whether or not anyone took part, so
the round in which no client reported (``FederatedProcess.empty_round``)
runs it on one zero-weight stand-in message; the stand-in's layout also
sizes what a client sends (``mechanism.bind_value_size``).
"""

from __future__ import annotations

import collections

import numpy as np

from fedsim.client.task import ClientOutput
from fedsim.learning import non_trainable as nt_rule
from fedsim.learning.algorithm import Algorithm, ClientMessage
from fedsim.learning.round_records import ServerState


def stand_in_message(algorithm: Algorithm, non_trainable: str, state: ServerState) -> ClientMessage:
    """What a client that trained on nothing would send: the message's layout, all zeros.

    ``non_trainable`` is the process's rule for non-trainable weights (``"average"`` sends their change too).
    """
    trainable = [np.zeros_like(w) for w in state.model_weights.trainable]
    stand_in = ClientOutput(
        delta=trainable, update_weight=0.0, metrics=collections.OrderedDict(), num_examples=0,
        start_loss=0.0, start_gradient=trainable, non_trainable=list(state.model_weights.non_trainable),
    )
    message = algorithm.message(stand_in, algorithm.broadcast(state, None), None)
    if non_trainable == "average":
        message = nt_rule.with_changes([message], [stand_in], state.model_weights.non_trainable)[0]
    return message


def stand_in_values(algorithm: Algorithm, non_trainable: str, state: ServerState) -> list:
    """Every array of ``stand_in_message``, as one client value of the aggregator chain."""
    message = stand_in_message(algorithm, non_trainable, state)
    return list(message.delta) + [a for arrays in message.extras.values() for a in arrays]
