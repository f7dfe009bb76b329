"""What runs inside a Ray actor: one compiled ``ClientWork``, built once, kept across rounds.

``RayExecutor`` wraps ``ClientWorker`` with ``ray.remote`` when it starts its
actors, so the class stays a plain, testable one; Ray is imported only to fetch
a population's source from the object store.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Union

import attrs

from fedsim.client import NO_INPUTS, ClientInputs, ClientTask, ClientWork
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
        # Object-store id -> population, built once per actor (reading a 10^6-client
        # SQLite index takes seconds): a run reads its training and its test population.
        self._populations: dict[str, Any] = {}

    def pid(self) -> int:
        """The actor's process id (the executor waits on this to know the actor is up)."""
        return os.getpid()

    def trace_count(self) -> int:
        """How many times this actor's training function was traced."""
        return self.client_work.trace_count

    def train(self, model_weights: Any, client: ClientPayload, inputs: ClientInputs = NO_INPUTS) -> TaskResult:
        """``ClientWork.train`` on the client's dataset, rebuilt or built from its source."""
        return self._run(lambda w, d: self.client_work.train(w, d, inputs), model_weights, client)

    def evaluate(self, model_weights: Any, client: ClientPayload, inputs: ClientInputs = NO_INPUTS) -> TaskResult:
        """``ClientWork.evaluate`` on the client's dataset (``inputs`` is unused)."""
        return self._run(self.client_work.evaluate, model_weights, client)

    def _run(self, method: Callable, model_weights: Any, client: ClientPayload) -> TaskResult:
        start = time.perf_counter()
        if isinstance(client, SourcedClient):
            dataset = client.recipe.build(self._population_of(client.source[0]))
        else:
            dataset = client.to_dataset()
        built = time.perf_counter()
        value = method(model_weights, dataset)
        return TaskResult(value, built - start, time.perf_counter() - built)

    def _population_of(self, source_ref: Any) -> Any:
        """The population the source behind ``source_ref`` builds, built once per actor."""
        import ray

        key = source_ref.hex()
        if key not in self._populations:
            if len(self._populations) >= MAX_POPULATIONS:  # a run has two; more are other runs'
                del self._populations[next(iter(self._populations))]
            self._populations[key] = ray.get(source_ref).client_data()
        return self._populations[key]
