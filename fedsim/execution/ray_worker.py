"""What runs inside a Ray actor: one compiled ``ClientWork``, built once, kept across rounds.

This module does not import Ray: ``RayExecutor`` wraps ``ClientWorker`` with
``ray.remote`` when it starts its actors, so the class stays a plain, testable one.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import attrs

from fedsim.execution.ray_datasets import ExportedDataset


@attrs.frozen
class WorkRecipe:
    """Everything an actor needs to build the same ``ClientWork`` as the driver.

    A live TensorFlow model cannot travel to another process, so the recipe
    holds the no-argument ``model_fn`` that builds it (it must pickle with
    cloudpickle: a module-level function, a closure or a ``functools.partial``)
    and the ``ClientWork`` arguments.
    """

    model_fn: Callable[[], Any]
    optimizer: Any
    weighted: bool = True
    proximal_mu: float = 0.0
    freeze_optimizer_state: bool = False


@attrs.frozen
class TaskResult:
    """A client's output (``ClientOutput`` or unfinalized metrics) and where the actor's time went."""

    value: Any
    rebuild_seconds: float  # NumPy arrays -> tf.data.Dataset
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
        # Imported here, not at module level: fedsim.learning imports fedsim.execution.
        from fedsim.learning.client_work import ClientWork

        self.client_work = ClientWork(
            recipe.model_fn(),
            recipe.optimizer,
            weighted=recipe.weighted,
            proximal_mu=recipe.proximal_mu,
            freeze_optimizer_state=recipe.freeze_optimizer_state,
        )

    def pid(self) -> int:
        """The actor's process id (the executor waits on this to know the actor is up)."""
        return os.getpid()

    def trace_count(self) -> int:
        """How many times this actor's training function was traced."""
        return self.client_work.trace_count

    def train(self, model_weights: Any, exported: ExportedDataset) -> TaskResult:
        """``ClientWork.train`` on the rebuilt dataset."""
        return self._run(self.client_work.train, model_weights, exported)

    def evaluate(self, model_weights: Any, exported: ExportedDataset) -> TaskResult:
        """``ClientWork.evaluate`` on the rebuilt dataset."""
        return self._run(self.client_work.evaluate, model_weights, exported)

    @staticmethod
    def _run(method: Callable, model_weights: Any, exported: ExportedDataset) -> TaskResult:
        start = time.perf_counter()
        dataset = exported.to_dataset()
        built = time.perf_counter()
        value = method(model_weights, dataset)
        return TaskResult(value, built - start, time.perf_counter() - built)
