"""Builds a process from an algorithm's blocks: the one place a ``FederatedProcess`` is assembled.

Every algorithm builder calls ``build_process`` with its ``Algorithm`` record,
so the model, client work, executor, aggregator, data preparation and fault
policy are wired the same way for all of them.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import tensorflow as tf

from fedsim.aggregators import Aggregator, MeanAggregator
from fedsim.client import ClientWork
from fedsim.execution import make_executor
from fedsim.learning.algorithm import Algorithm
from fedsim.learning.client_state import InMemoryClientStore
from fedsim.learning.faults import FaultPolicy
from fedsim.learning.process import ClientId, ClientPrep, FederatedProcess
from fedsim.models.model_fn import build_model
from fedsim.optimizers import SGD


def batch_and_repeat(batch_size: Optional[int], local_epochs: int = 1):
    """The per-client training pipeline: batch (if ``batch_size``), then repeat for epochs."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size} must be a positive integer or None (pre-batched data)"
        )
    if local_epochs < 1:
        raise ValueError(f"local_epochs={local_epochs} must be >= 1")

    def prepare(dataset: tf.data.Dataset) -> tf.data.Dataset:
        if batch_size is not None:
            dataset = dataset.batch(batch_size)
        return dataset.repeat(local_epochs) if local_epochs > 1 else dataset

    return prepare


# Evaluation batches: metrics add up over batches, so evaluation takes as many examples per
# call as memory comfortably allows (a CNN's activations for 1,024 MNIST images: ~100 MB).
EVAL_BATCH_SIZE = 1024

# Larger than any client; tf.data fills a batch only with the elements there are.
_WHOLE_DATASET = 2**31 - 1


def one_batch(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The whole client dataset as one batch (the pipeline of algorithms with ``one_batch``)."""
    return dataset.batch(_WHOLE_DATASET)


def client_prep(
    batch_size: Optional[int],
    local_epochs: int,
    stragglers: Any = None,
    keep_partial_work: bool = True,
    dropout: Any = None,
) -> ClientPrep:
    """Per-client training preparation with simulated stragglers and dropouts.

    Args:
      stragglers: has ``local_epochs(round_num, client_id, local_epochs) -> int``
        (e.g. ``fedsim.simulation.sampling.Stragglers``); None: everyone runs ``local_epochs``.
      keep_partial_work: a straggler trains its fewer epochs and reports (FedProx);
        False: it is dropped from the round (FedAvg in the FedProx paper).
      dropout: has ``reports(round_num, client_id) -> bool``; a client that does not
        report is dropped (e.g. ``fedsim.simulation.sampling.Dropout``).
    """
    batch_and_repeat(batch_size, local_epochs)  # validates both

    def prepare(
        dataset: tf.data.Dataset, round_num: int, client_id: ClientId
    ) -> Optional[tuple[tf.data.Dataset, int]]:
        if dropout is not None and not dropout.reports(round_num, client_id):
            return None
        epochs = local_epochs
        if stragglers is not None:
            epochs = stragglers.local_epochs(round_num, client_id, local_epochs)
            if epochs < local_epochs and not keep_partial_work:
                return None
        return batch_and_repeat(batch_size, epochs)(dataset), epochs

    return prepare


def build_process(
    model_fn: Callable[[], Any],
    algorithm: Algorithm,
    *,
    server_optimizer: Any = None,
    batch_size: Optional[int] = None,
    local_epochs: int = 1,
    aggregator: Optional[Aggregator] = None,
    executor_fn: Optional[Callable[[ClientWork], Any]] = None,
    stragglers: Any = None,
    keep_partial_work: Optional[bool] = None,
    dropout: Any = None,
    faults: Optional[FaultPolicy] = None,
    client_store: Any = None,
    seed: int = 0,
    non_trainable: str = "keep",
    non_trainable_store: Any = None,
) -> FederatedProcess:
    """The process running ``algorithm``.

    Args:
      model_fn: no-argument callable returning a new fedsim model; called once.
      algorithm: the algorithm's blocks; its ``task`` builds the client work.
      server_optimizer: applies the server delta; default ``SGD(1.0)`` (each paper's plain step).
      batch_size, local_epochs: the per-client training pipeline (``batch_and_repeat``);
        an algorithm with ``one_batch`` takes each whole dataset as one batch instead.
      aggregator: combines the clients' messages; default the (un)weighted mean, as the task weighs.
      executor_fn: builds the executor from the client work; default ``make_executor("auto", ...)``,
        which says in the log when it cannot use a faster executor.
      stragglers, keep_partial_work, dropout: simulated stragglers and dropouts (``client_prep``);
        ``keep_partial_work`` None: the algorithm's own rule.
      faults: the fault policy (default ``FaultPolicy()``).
      client_store: per-client state of algorithms that keep it; default in memory
        (``NpzClientStore(directory)`` for large populations or resumable runs).
      seed: the run's seed, from which each client's random draws derive (``FederatedProcess``).
      non_trainable, non_trainable_store: what becomes of clients' non-trainable weights
        (``"keep"``, ``"average"``, ``"per_client"``; ``fedsim.learning.non_trainable``).
    """
    if algorithm.one_batch and (batch_size is not None or local_epochs != 1 or stragglers is not None):
        raise ValueError(
            f"{algorithm.name} trains on each client's whole dataset as one batch, once: leave out "
            f"batch_size ({batch_size!r}), local_epochs ({local_epochs!r}) and stragglers"
        )
    if keep_partial_work is None:
        keep_partial_work = algorithm.keep_partial_work
    prepare_train = one_batch if algorithm.one_batch else None
    client_work = ClientWork.for_task(build_model(model_fn), algorithm.task)
    prepare_client = None
    if stragglers is not None or dropout is not None:
        prepare_client = client_prep(batch_size, local_epochs, stragglers, keep_partial_work, dropout)
    return FederatedProcess(
        model=client_work.model,
        algorithm=algorithm,
        executor=executor_fn(client_work) if executor_fn else make_executor("auto", client_work),
        aggregator=aggregator if aggregator is not None else MeanAggregator(weighted=algorithm.task.weighted),
        server_optimizer=server_optimizer if server_optimizer is not None else SGD(1.0),
        prepare_train=prepare_train or batch_and_repeat(batch_size, local_epochs),
        prepare_eval=prepare_train or batch_and_repeat(None if batch_size is None else max(batch_size, EVAL_BATCH_SIZE)),
        prepare_client=prepare_client,
        faults=faults,
        client_store=client_store if client_store is not None or not algorithm.client_state
        else InMemoryClientStore(),
        seed=seed,
        non_trainable=non_trainable,
        non_trainable_store=non_trainable_store,
    )
