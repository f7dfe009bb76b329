"""A cohort's inputs and outputs as the batched executors take and give them.

``ClientInputs`` of many clients become stacked arrays (offsets, random-generator
states, non-trainable starts) and one broadcast optimizer state; a cohort's
stacked results become one ``ClientOutput`` per client. Shared by the vectorized
and multi-device executors, and by Ray actors that train a cohort share.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedsim.client import ClientOutput
from fedsim.client.task import update_weight


class VectorizationError(ValueError):
    """Raised when a client work cannot be vectorized; the message says why."""


def cohort_inputs_as_arrays(task: Any, inputs: Sequence[Any]):
    """The cohort's ``ClientInputs`` as the compiled step takes them: stacked offsets, one optimizer state.

    Raises ``VectorizationError`` for inputs the task does not declare, or for
    optimizer states that differ between clients (one state is broadcast).
    """
    sent_offsets = [i.gradient_offset is not None for i in inputs]
    sent_states = [i.optimizer_state is not None for i in inputs]
    if any(sent_offsets) and not task.gradient_offset or any(sent_states) and not task.freeze_optimizer_state:
        raise VectorizationError(
            "clients received inputs their task does not declare (ClientTask.gradient_offset / "
            "freeze_optimizer_state); declare them so every executor applies them")
    offsets = None
    if task.gradient_offset:
        offsets = [np.stack(arrays) for arrays in zip(*(i.gradient_offset for i in inputs))]
    optimizer_state = ()
    if task.freeze_optimizer_state and inputs:
        optimizer_state = inputs[0].optimizer_state
        if optimizer_state is None or any(i.optimizer_state is not optimizer_state for i in inputs):
            raise VectorizationError(
                "the batched executors broadcast one optimizer state to the cohort; these clients "
                "received different ones (use executor 'sequential')")
    return offsets, optimizer_state


def cohort_rng_states(client_work: Any, inputs: Sequence[Any]) -> list[np.ndarray]:
    """Each client's random-generator states (from its seed), stacked per state variable: ``[clients, ...]``."""
    return [np.stack(states) for states in zip(*(client_work.rng_states(i.seed) for i in inputs))]


def cohort_non_trainable(model_weights: Any, inputs: Sequence[Any]) -> list[np.ndarray]:
    """The non-trainable weights each client starts from, stacked per weight: ``[clients, ...]``.

    The server's for every client, except a client sent its own (``ClientInputs.non_trainable``, FedBN).
    """
    server = [np.asarray(a) for a in model_weights.non_trainable]
    starts = [server if i.non_trainable is None else [np.asarray(a) for a in i.non_trainable] for i in inputs]
    return [np.stack([s[k] for s in starts]).astype(w.dtype, copy=False) for k, w in enumerate(server)]


def client_outputs(client_work: Any, results) -> list:
    """Splits a cohort's stacked results into one ``ClientOutput`` per client."""
    delta, num_examples, metrics, non_trainable, statistics = results  # NumPy, one array per leaf, whole cohort
    outputs = []
    for c, count in enumerate(num_examples.tolist()):
        client_metrics = type(metrics)((k, [v[c] for v in vs]) for k, vs in metrics.items())
        start = {}
        if statistics:
            start = dict(start_loss=float(statistics[0][c]), start_gradient=[g[c] for g in statistics[1]])
        outputs.append(ClientOutput(
            delta=[d[c] for d in delta], update_weight=update_weight(client_work.task, count),
            metrics=client_metrics, num_examples=int(count), num_steps=int(client_metrics["num_batches"][0]),
            non_trainable=[n[c] for n in non_trainable], **start,
        ))
    return outputs
