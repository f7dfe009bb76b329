"""What runs inside a Ray actor: one compiled ``ClientWork``, built once, kept across rounds.

``RayExecutor`` wraps ``ClientWorker`` with ``ray.remote`` when it starts its
actors, so the class stays a plain, testable one; Ray is imported only to fetch
a population's source from the object store.

An actor trains either one client per task (``train``, the client work's own
loop) or its share of the cohort in one task (``train_cohort``, the vectorized
executor's compiled cohort call, as ``auto`` runs in process): the same client
step either way, so the same numbers as the in-process executors.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any, Callable, Optional, Sequence, Union

import attrs

from fedsim.client import NO_INPUTS, ClientFailure, ClientInputs, ClientTask, ClientWork
from fedsim.execution.ray_datasets import ExportedDataset, SourcedClient

ClientPayload = Union[ExportedDataset, SourcedClient]
MAX_POPULATIONS = 4  # populations an actor keeps built (oldest dropped first)


@attrs.frozen
class WorkRecipe:
    """Everything an actor needs to build the same ``ClientWork`` as the driver.

    A live TensorFlow model cannot travel to another process, so the recipe
    holds the no-argument ``model_fn`` that builds it (it must pickle with
    cloudpickle: a module-level function, a closure or a ``functools.partial``)
    and the ``ClientTask``.
    """

    model_fn: Callable[[], Any]
    task: ClientTask


@attrs.frozen
class TaskResult:
    """A client's output (``ClientOutput`` or unfinalized metrics) and where the actor's time went."""

    value: Any
    rebuild_seconds: float  # NumPy arrays or the population's source -> tf.data.Dataset
    compute_seconds: float  # the compiled client work


class ClientWorker:
    """Trains and evaluates clients with one ``ClientWork`` built from a ``WorkRecipe``.

    Args:
      recipe: how to build the model and its client work.
      num_threads: TensorFlow intra-op threads; the actor's CPU share, so that
        actors on one machine do not each start a thread per core and contend.
    """

    def __init__(self, recipe: WorkRecipe, num_threads: int):
        import tensorflow as tf

        # Must run before TensorFlow executes its first op in this process.
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
        self.client_work = ClientWork.for_task(recipe.model_fn(), recipe.task)
        self._cohort_executor = None  # the vectorized executor, built by the first train_cohort
        # Object-store id -> population, built once per actor (reading a 10^6-client
        # SQLite index takes seconds): a run reads its training and its test population.
        self._populations: dict[str, Any] = {}

    def pid(self) -> int:
        """The actor's process id (the executor waits on this to know the actor is up)."""
        return os.getpid()

    def trace_count(self) -> int:
        """How many times this actor's training function was traced (the cohort trainer's, once it trains cohorts)."""
        if self._cohort_executor is not None:
            return self._cohort_executor.trainer.trace_count
        return self.client_work.trace_count

    def cohort_blocker(self) -> Optional[str]:
        """Why this actor cannot train several clients in one call (``train_cohort``), or ``None``."""
        from fedsim.execution.vectorized import cohort_blocker

        return cohort_blocker(self.client_work)

    def train(self, model_weights: Any, client: ClientPayload, inputs: ClientInputs = NO_INPUTS) -> TaskResult:
        """``ClientWork.train`` on the client's dataset, rebuilt or built from its source."""
        return self._run(lambda w, d: self.client_work.train(w, d, inputs), model_weights, client)

    def evaluate(self, model_weights: Any, client: ClientPayload, inputs: ClientInputs = NO_INPUTS) -> TaskResult:
        """``ClientWork.evaluate`` on the client's dataset (``inputs`` is unused)."""
        return self._run(self.client_work.evaluate, model_weights, client)

    def train_cohort(
        self, model_weights: Any, clients: Sequence[ClientPayload], inputs: Sequence[ClientInputs],
        client_ids: Sequence[Any],
    ) -> list[Union[TaskResult, BaseException]]:
        """The vectorized executor's ``train`` on these clients: per client a ``TaskResult``, or
        the exception its own work (or building its dataset) raised; the others still train.

        The compute time is the one compiled call's, shared equally among its clients.
        """
        results: list[Any] = [None] * len(clients)
        datasets, rebuild = {}, {}
        for position, client in enumerate(clients):
            start = time.perf_counter()
            try:
                datasets[position] = self._dataset(client)
            except Exception as error:  # noqa: BLE001 - the client's failure, reported as its result
                results[position] = _picklable(error)
            rebuild[position] = time.perf_counter() - start
        positions = list(datasets)
        if not positions:
            return results
        if self._cohort_executor is None:
            from fedsim.execution.vectorized import VectorizedExecutor

            self._cohort_executor = VectorizedExecutor(self.client_work)
        start = time.perf_counter()
        outputs = self._cohort_executor.train(
            model_weights, [datasets[p] for p in positions], [inputs[p] for p in positions],
            [client_ids[p] for p in positions])
        share = (time.perf_counter() - start) / len(positions)
        for position, output in zip(positions, outputs):
            if isinstance(output, ClientFailure):  # the ClientFailure is made again in the driver
                results[position] = _picklable(output.error)
            else:
                results[position] = TaskResult(output, rebuild[position], share)
        return results

    def _run(self, method: Callable, model_weights: Any, client: ClientPayload) -> TaskResult:
        start = time.perf_counter()
        dataset = self._dataset(client)
        built = time.perf_counter()
        value = method(model_weights, dataset)
        return TaskResult(value, built - start, time.perf_counter() - built)

    def _dataset(self, client: ClientPayload) -> Any:
        """The client's dataset: built from the population's source, or rebuilt from exported arrays."""
        if isinstance(client, SourcedClient):
            return client.recipe.build(self._population_of(client.source[0]))
        return client.to_dataset()

    def _population_of(self, source_ref: Any) -> Any:
        """The population the source behind ``source_ref`` builds, built once per actor."""
        import ray

        key = source_ref.hex()
        if key not in self._populations:
            if len(self._populations) >= MAX_POPULATIONS:  # a run has two; more are other runs'
                del self._populations[next(iter(self._populations))]
            self._populations[key] = ray.get(source_ref).client_data()
        return self._populations[key]


def _picklable(error: BaseException) -> BaseException:
    """``error``, or a ``RuntimeError`` naming it when it would not survive the trip to the driver."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any pickling problem gets the same stand-in
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
