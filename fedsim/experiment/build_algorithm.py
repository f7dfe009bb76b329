"""Algorithm blocks -> federated processes, through one registry of builders.

Every algorithm runs on every executor and under every aggregator chain: the
round is the same for all of them (``fedsim.learning.process``). Where an
executor cannot run an algorithm's client step, ``auto`` says so in the log
and an explicit choice raises ``VectorizationError``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import attrs

from fedsim import algorithms
from fedsim.learning.client_state import InMemoryClientStore, NpzClientStore
from fedsim.execution import make_executor
from fedsim.experiment import algorithm_blocks as blocks
from fedsim.learning.faults import FaultPolicy
from fedsim.optimizers import SGD


class AlgorithmBuildError(ValueError):
    """An algorithm combined with blocks it cannot use (e.g. FedNova with a momentum client optimizer)."""


@attrs.frozen
class BuildContext:
    """What every builder may draw on besides its own block."""

    model_fn: Callable[[], Any]
    client_optimizer: Any
    server_optimizer: Any
    aggregator: Optional[Any]
    executor_fn: Callable[[Any], Any]
    faults: FaultPolicy
    population_size: int
    state_dir: Optional[Path]

    def common(self) -> dict[str, Any]:
        """The keyword arguments every algorithm builder takes."""
        return dict(aggregator=self.aggregator, executor_fn=self.executor_fn, faults=self.faults)

    def client_store(self) -> Any:
        """Per-client state on disk in the run directory, else in memory."""
        return NpzClientStore(self.state_dir / "client_state") if self.state_dir else InMemoryClientStore()

    def plain_sgd_rate(self, name: str) -> float:
        """The client learning rate, for algorithms whose analysis assumes plain local SGD."""
        optimizer = self.client_optimizer
        if not isinstance(optimizer, SGD) or optimizer.momentum or callable(optimizer.learning_rate):
            raise AlgorithmBuildError(
                f"algorithm {name!r} runs plain local SGD; set client_optimizer to "
                f"name = \"sgd\" with momentum = 0 (got {optimizer!r})"
            )
        return float(optimizer.learning_rate)


def _pipeline(block: Any) -> dict[str, Any]:
    return dict(batch_size=block.batch_size, local_epochs=block.local_epochs)


_BUILDERS: dict[str, Callable[[Any, BuildContext], Any]] = {
    "fedavg": lambda b, c: algorithms.build_fedavg(
        c.model_fn, c.client_optimizer, c.server_optimizer, weighted=b.weighted, **_pipeline(b), **c.common()),
    "fedprox": lambda b, c: algorithms.build_fedprox(
        c.model_fn, b.mu, c.client_optimizer, c.server_optimizer, weighted=b.weighted, **_pipeline(b), **c.common()),
    "fedsgd": lambda b, c: algorithms.build_fedsgd(
        c.model_fn, c.server_optimizer, weighted=b.weighted, **c.common()),
    "fednova": lambda b, c: algorithms.build_fednova(
        c.model_fn, c.plain_sgd_rate(b.name), c.server_optimizer, **_pipeline(b), **c.common()),
    "mime_lite": lambda b, c: algorithms.build_mime_lite(
        c.model_fn, c.client_optimizer, weighted=b.weighted, server_optimizer=c.server_optimizer,
        **_pipeline(b), **c.common()),
    "qffl": lambda b, c: algorithms.build_qffl(
        c.model_fn, b.q, c.plain_sgd_rate(b.name), server_optimizer=c.server_optimizer, **_pipeline(b),
        **c.common()),
    "q_fedsgd": lambda b, c: algorithms.build_q_fedsgd(
        c.model_fn, b.q, 1.0 / c.plain_sgd_rate(b.name), server_optimizer=c.server_optimizer, **c.common()),
    "scaffold": lambda b, c: algorithms.build_scaffold(
        c.model_fn, c.population_size, c.plain_sgd_rate(b.name), client_store=c.client_store(),
        weighted=b.weighted, server_optimizer=c.server_optimizer, **_pipeline(b), **c.common()),
    "scaffold_option_i": lambda b, c: algorithms.build_scaffold_option_i(
        c.model_fn, c.population_size, c.plain_sgd_rate(b.name), client_store=c.client_store(),
        weighted=b.weighted, server_optimizer=c.server_optimizer, **_pipeline(b), **c.common()),
    "feddyn": lambda b, c: algorithms.build_feddyn(
        c.model_fn, c.population_size, b.alpha, c.plain_sgd_rate(b.name), client_store=c.client_store(),
        weighted=b.weighted, server_optimizer=c.server_optimizer, **_pipeline(b), **c.common()),
}


def _executor_fn(block: Any, model_fn: Callable[[], Any], faults: FaultPolicy) -> Callable[[Any], Any]:
    name = "auto" if block is None else block.name
    if name != "ray":
        return lambda client_work: make_executor(name, client_work)
    # Imported here: Ray is an optional extra, and the executor says which one to install.
    from fedsim.execution.ray_executor import RayExecutor

    return RayExecutor.factory(
        model_fn, address=block.address, num_actors=block.num_actors, max_retries=faults.client_retries)


def build_process(
    algorithm: blocks.AlgorithmBlock,
    model_fn: Callable[[], Any],
    client_optimizer: Any,
    server_optimizer: Any,
    aggregator: Optional[Any],
    executor: Optional[Any] = None,
    population_size: int = 0,
    state_dir: Optional[Path] = None,
    faults: Optional[FaultPolicy] = None,
) -> Any:
    """The process of ``algorithm``; ``aggregator`` None keeps the algorithm's own mean.

    ``state_dir`` holds per-client state of stateful algorithms (SCAFFOLD, FedDyn)
    on disk; without it, that state lives in memory.
    """
    faults = faults if faults is not None else FaultPolicy()
    context = BuildContext(
        model_fn, client_optimizer, server_optimizer, aggregator, _executor_fn(executor, model_fn, faults),
        faults, population_size, state_dir,
    )
    builder = _BUILDERS.get(algorithm.name)
    if builder is None:
        raise TypeError(f"no builder for algorithm block {algorithm!r}")
    return builder(algorithm, context)
