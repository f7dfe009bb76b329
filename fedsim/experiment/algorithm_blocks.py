"""The ``[algorithm]`` and ``[client]`` tables of a run.

There is no config class per algorithm: the ``[algorithm]`` table is a name
in ``fedsim.algorithms.ALGORITHMS`` and the keyword arguments of that
algorithm's factory (``fedsim.algorithms.registry``), checked against the
factory's signature when the config loads. How each client trains (batch
size, local epochs, shuffling, weighting) is one ``[client]`` table shared by
every algorithm.
"""
from __future__ import annotations

from typing import Any, Optional

import attrs

from fedsim.algorithms.registry import make_algorithm
from fedsim.experiment.validators import non_negative, positive
from fedsim.learning.algorithm import Algorithm


@attrs.frozen
class AlgorithmChoice:
    """A registered algorithm ``name`` and its hyperparameters (the loader fills in every default)."""

    name: str = "fedavg"
    params: dict[str, Any] = attrs.field(factory=dict)

    def build(
        self, client_optimizer: Any = None, weighted: Optional[bool] = None, population_size: Optional[int] = None
    ) -> Algorithm:
        """The algorithm's record, with the run's inputs (see ``fedsim.algorithms.registry``)."""
        return make_algorithm(
            self.name, self.params, client_optimizer=client_optimizer, weighted=weighted,
            population_size=population_size,
        )


@attrs.frozen
class ClientConfig:
    """How every client trains, whatever the algorithm.

    ``shuffle_buffer`` > 0 shuffles each client's examples before batching, in
    an order that depends only on (seed, round, client), so resumed runs match.
    ``weighted`` (clients count by example count, or equally) unset: the
    algorithm's own default; algorithms that fix their weighting refuse it.
    Algorithms that train on one whole-dataset batch (FedSGD, q-FedSGD)
    ignore ``batch_size`` and refuse ``local_epochs`` other than 1.
    """

    batch_size: int = attrs.field(default=10, validator=positive)
    local_epochs: int = attrs.field(default=1, validator=positive)
    shuffle_buffer: int = attrs.field(default=0, validator=non_negative)
    weighted: Optional[bool] = None
