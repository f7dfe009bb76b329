"""A run's algorithm, client and executor blocks -> its federated process.

There is one path for every algorithm: the registry makes the ``Algorithm``
record (``fedsim.algorithms.registry``), and ``fedsim.learning.build_process``
wires it to the model, executor, aggregator and fault policy. Where an
executor cannot run an algorithm's client step, ``auto`` says so in the log
and an explicit choice raises ``VectorizationError``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import attrs

from fedsim.execution import make_executor
from fedsim.learning.builder import build_process as build_learning_process
from fedsim.learning.client_state import InMemoryClientStore, NpzClientStore
from fedsim.learning.faults import FaultPolicy

_LOG = logging.getLogger(__name__)


def _executor_fn(block: Any, model_fn: Callable[[], Any], faults: FaultPolicy) -> Callable[[Any], Any]:
    name = "auto" if block is None else block.name
    if name != "ray":
        return lambda client_work: make_executor(name, client_work)
    # Imported here: Ray is an optional extra, and the executor says which one to install.
    from fedsim.execution.ray_executor import RayExecutor

    return RayExecutor.factory(
        model_fn, address=block.address, num_actors=block.num_actors, max_retries=faults.client_retries,
        client_data=block.client_data, actor_executor=block.actor_executor)


def build_process(
    config: Any,
    model_fn: Callable[[], Any],
    aggregator: Optional[Any],
    population_size: int,
    state_dir: Optional[Path] = None,
) -> Any:
    """The process of ``config`` (a ``RunConfig``); ``aggregator`` None keeps the algorithm's own mean.

    ``state_dir`` holds per-client state of stateful algorithms (SCAFFOLD, FedDyn)
    on disk; without it, that state lives in memory.
    """
    algorithm = config.algorithm_record(population_size)
    client = config.client
    if algorithm.one_batch:
        _LOG.info("%s trains on each client's whole dataset as one batch: client.batch_size (%d) does not apply",
                  algorithm.name, client.batch_size)
    faults = FaultPolicy(**attrs.asdict(config.faults))
    store = None
    if algorithm.client_state:
        store = NpzClientStore(state_dir / "client_state") if state_dir else InMemoryClientStore()
    return build_learning_process(
        model_fn,
        algorithm,
        server_optimizer=config.server_optimizer,
        batch_size=None if algorithm.one_batch else client.batch_size,
        local_epochs=client.local_epochs,
        aggregator=aggregator,
        executor_fn=_executor_fn(config.executor, model_fn, faults),
        faults=faults,
        client_store=store,
        seed=config.seed,
        non_trainable=config.non_trainable,
        non_trainable_store=(
            NpzClientStore(state_dir / "client_non_trainable")
            if state_dir and config.non_trainable == "per_client" else None
        ),
    )
