"""Algorithm blocks -> federated processes, using the builders of ``fedsim.algorithms``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from fedsim import algorithms
from fedsim.algorithms.client_state import InMemoryClientStore, NpzClientStore
from fedsim.execution import make_executor
from fedsim.learning.faults import FaultPolicy
from fedsim.experiment import algorithm_blocks as blocks
from fedsim.optimizers import SGD


class AlgorithmBuildError(ValueError):
    """An algorithm combined with blocks it cannot use (e.g. FedNova with a momentum client optimizer)."""


def _plain_sgd_rate(algorithm: blocks.AlgorithmBlock, client_optimizer: Any) -> float:
    # FedNova's and q-FFL's analyses assume vanilla local SGD; refuse anything else
    # rather than silently dropping the optimizer's other settings.
    if not isinstance(client_optimizer, SGD) or client_optimizer.momentum or callable(client_optimizer.learning_rate):
        raise AlgorithmBuildError(
            f"algorithm {algorithm.name!r} runs plain local SGD; set client_optimizer to "
            f"name = \"sgd\" with momentum = 0 (got {client_optimizer!r})"
        )
    return float(client_optimizer.learning_rate)


def _ray_executor(block: Any, model_fn: Callable[[], Any], faults: FaultPolicy) -> Callable[[Any], Any]:
    # Imported here: Ray is an optional extra, and the executor says which one to install.
    from fedsim.execution.ray_executor import RayExecutor

    return RayExecutor.factory(
        model_fn, address=block.address, num_actors=block.num_actors, max_retries=faults.client_retries,
        on_failure="drop" if faults.on_client_failure == "drop" else "retry")


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

    ``state_dir`` holds per-client state of stateful algorithms (SCAFFOLD) on
    disk; without it, that state lives in memory. ``faults`` applies to the
    algorithms whose clients run through the executor (FedAvg, FedOpt, FedProx, FedSGD).
    """
    executor_name = "sequential" if executor is None else executor.name
    faults = faults if faults is not None else FaultPolicy()
    if executor_name not in ("sequential", "auto") and isinstance(algorithm, (blocks.MimeLiteConfig, blocks.ScaffoldConfig)):
        raise AlgorithmBuildError(
            f"algorithm {algorithm.name!r} runs its clients sequentially; set executor.name = \"sequential\""
        )

    if executor_name == "ray" and isinstance(algorithm, (blocks.FedNovaConfig, blocks.QfflConfig)):
        # Their rounds call the executor without client ids, so a client the Ray
        # executor drops could not be told apart from the others.
        raise AlgorithmBuildError(
            f"algorithm {algorithm.name!r} does not run on the Ray executor yet; use executor.name = \"auto\""
        )

    def executor_fn(client_work: Any) -> Any:
        if executor_name == "ray":
            return _ray_executor(executor, model_fn, faults)(client_work)
        return make_executor(executor_name, client_work)

    if isinstance(algorithm, blocks.FedAvgConfig):
        return algorithms.build_fedavg(
            model_fn, client_optimizer, server_optimizer, weighted=algorithm.weighted,
            batch_size=algorithm.batch_size, local_epochs=algorithm.local_epochs, aggregator=aggregator,
            executor_fn=executor_fn, faults=faults)
    if isinstance(algorithm, blocks.FedProxConfig):
        return algorithms.build_fedprox(
            model_fn, algorithm.mu, client_optimizer, server_optimizer, weighted=algorithm.weighted,
            batch_size=algorithm.batch_size, local_epochs=algorithm.local_epochs, aggregator=aggregator,
            executor_fn=executor_fn, faults=faults)
    if isinstance(algorithm, blocks.FedSgdConfig):
        return algorithms.build_fedsgd(
            model_fn, server_optimizer, weighted=algorithm.weighted, aggregator=aggregator, executor_fn=executor_fn,
            faults=faults)
    if isinstance(algorithm, blocks.FedNovaConfig):
        return algorithms.build_fednova(
            model_fn, _plain_sgd_rate(algorithm, client_optimizer), server_optimizer,
            batch_size=algorithm.batch_size, local_epochs=algorithm.local_epochs, aggregator=aggregator,
            executor_fn=executor_fn)
    if isinstance(algorithm, blocks.MimeLiteConfig):
        return algorithms.build_mime_lite(
            model_fn, client_optimizer, algorithm.server_learning_rate, weighted=algorithm.weighted,
            batch_size=algorithm.batch_size, local_epochs=algorithm.local_epochs, aggregator=aggregator)
    if isinstance(algorithm, blocks.QfflConfig):
        if aggregator is not None:
            raise AlgorithmBuildError("algorithm 'qffl' combines client updates its own way; remove [[aggregator]]")
        return algorithms.build_qffl(
            model_fn, algorithm.q, _plain_sgd_rate(algorithm, client_optimizer),
            batch_size=algorithm.batch_size, local_epochs=algorithm.local_epochs, executor_fn=executor_fn)
    if isinstance(algorithm, blocks.ScaffoldConfig):
        store = NpzClientStore(state_dir / "client_state") if state_dir else InMemoryClientStore()
        return algorithms.build_scaffold(
            model_fn, population_size, _plain_sgd_rate(algorithm, client_optimizer),
            algorithm.server_learning_rate, batch_size=algorithm.batch_size,
            local_epochs=algorithm.local_epochs, client_store=store, weighted=algorithm.weighted,
            aggregator=aggregator)
    raise TypeError(f"no builder for algorithm block {algorithm!r}")
