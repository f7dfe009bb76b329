"""A pool of ``ClientWorker`` actors and the loop that runs a cohort on it, with faults handled.

Clients go to whichever actor has room (at most ``TASKS_PER_ACTOR`` in flight
each, so an actor has its next client's arguments before it finishes the
current one), one client per task or a group of clients per task (the actor
trains a group in one compiled call), and results are put back in cohort
order. Two kinds of fault:

- the actor dies (killed, out of memory, node lost): not the client's fault, so
  the client is re-run on a surviving actor, up to ``max_retries`` times; the dead
  actor is replaced before the next round (or at once, when none survives);
- the client's work raises: the client yields a ``ClientFailure`` (its id and the
  original error, unwrapped from Ray's) at once, never an output, and the round's
  fault policy (``fedsim.learning.faults``) retries, drops or raises, as for every executor.

A client whose actor died more than ``max_retries`` times yields a ``ClientFailure`` too;
either way it is logged and counted, never lost silently.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Optional, Sequence

import attrs

from fedsim.execution.ray_datasets import SourcedClient, export_dataset
from fedsim.execution.ray_worker import ClientPayload, ClientWorker, WorkRecipe

# One exception class for a failing client, whichever executor or process saw it.
from fedsim.client import ClientFailure

logger = logging.getLogger(__name__)

TASKS_PER_ACTOR = 2


@attrs.frozen
class RoundStats:
    """What happened while running one cohort, and where the time went.

    ``failures`` lists every failed attempt in the order seen, including ones a
    re-run after an actor's death then fixed. Driver-side seconds (export, put, dispatch, wait, gather)
    are wall time; actor-side seconds (rebuild, compute) are summed over clients.
    """

    num_clients: int
    clients_retried: int  # re-run after their actor died
    failed_positions: tuple[int, ...]  # cohort positions that yielded a ClientFailure
    failed_client_ids: tuple
    actor_deaths: int
    failures: tuple[ClientFailure, ...]
    built_by_actors: int = 0  # clients the actors built from the population's source
    sent_bytes: int = 0  # client data sent, every attempt: exported arrays, or pickled recipes
    export_seconds: float = 0.0  # tf.data -> NumPy (or sizing a recipe), in the driver (part of dispatch)
    put_seconds: float = 0.0  # model weights (and a run's new source) into the object store, once
    dispatch_seconds: float = 0.0  # exporting datasets and submitting tasks
    wait_seconds: float = 0.0  # blocked until some task finishes
    gather_seconds: float = 0.0  # fetching and unpickling results
    rebuild_seconds: float = 0.0  # NumPy or the source -> tf.data, in the actors
    compute_seconds: float = 0.0  # compiled client work, in the actors
    wall_seconds: float = 0.0


@attrs.define
class _Slot:
    actor: Any
    load: int = 0
    alive: bool = True


class ActorPool:
    """``num_actors`` actors, each holding a ``ClientWork`` built from ``recipe``.

    Args:
      ray: the imported ``ray`` module (imported lazily by the executor).
      actor_options: ``ray.remote`` options per actor (``num_cpus``, ``num_gpus``).
      start_timeout: seconds to wait for new actors to build their client work.
    """

    def __init__(
        self,
        ray: Any,
        recipe: WorkRecipe,
        num_actors: int,
        actor_options: dict,
        start_timeout: float,
    ):
        self._ray = ray
        self._recipe_ref = ray.put(recipe)  # pickled once, shared by every actor (re)start
        self._num_actors = num_actors
        self._start_timeout = start_timeout
        # The pool replaces dead actors itself, so Ray does not restart them behind its back.
        self._actor_class = ray.remote(ClientWorker).options(max_restarts=0, **actor_options)
        self._threads = max(1, int(actor_options.get("num_cpus", 1)))
        self._slots: list[_Slot] = []
        self.top_up()

    @property
    def actors(self) -> list:
        """Handles of the live actors."""
        return [s.actor for s in self._slots if s.alive]

    def top_up(self) -> None:
        """Replaces dead actors and waits until every actor has built its client work."""
        for slot in self._slots:
            if not slot.alive:
                # An actor that is unreachable but not dead would keep its CPU and
                # block its replacement; killing a dead actor does nothing.
                self._ray.kill(slot.actor)
        self._slots = [s for s in self._slots if s.alive]
        new = [
            self._actor_class.remote(self._recipe_ref, self._threads)
            for _ in range(self._num_actors - len(self._slots))
        ]
        if not new:
            return
        ready, _ = self._ray.wait(
            [a.pid.remote() for a in new], num_returns=len(new), timeout=self._start_timeout
        )
        if len(ready) < len(new):
            resources = self._ray.available_resources()
            for actor in new:
                self._ray.kill(actor)
            raise RuntimeError(
                f"only {len(ready)} of {len(new)} Ray actors started within {self._start_timeout}s "
                f"(cluster resources free: {resources}); pass a smaller num_actors, add nodes, or "
                "raise start_timeout if building the model is slow"
            )
        self._ray.get(ready)  # raises here if model_fn failed inside the actor
        self._slots += [_Slot(a) for a in new]

    def trace_counts(self) -> list[int]:
        """Traces of the training function, per live actor."""
        return self._ray.get([a.trace_count.remote() for a in self.actors])

    def shutdown(self) -> None:
        """Kills every actor of the pool."""
        for slot in self._slots:
            self._ray.kill(slot.actor)
        self._slots = []

    def run(
        self,
        method: str,
        weights_ref: Any,
        clients: Sequence[Any],
        inputs: Sequence[Any],
        client_ids: Sequence[Any],
        max_retries: int,
        groups: Optional[Sequence[Sequence[int]]] = None,
    ) -> tuple[list[Any], dict]:
        """Runs ``method`` for every client (a ``SourcedClient`` or a ``tf.data.Dataset``);
        returns per position a ``TaskResult`` or a ``ClientFailure``, and counters.

        ``groups`` (cohort positions) sends each group to one actor as one task
        (``train_cohort``: the actor trains them in one compiled call); default:
        one task per client.
        A client whose actor died runs again on another actor, up to
        ``max_retries`` times (Ray's failure, not the client's; the survivors of
        a group go again together); a client whose own work raised yields a
        ``ClientFailure`` at once: the round's fault policy decides what happens
        to it, as for every executor.
        Each dataset is exported just before its task is sent, so the driver reads
        the next client while the actors compute (and a retry reuses the export);
        a ``SourcedClient`` goes as it is.
        """
        ray = self._ray
        for slot in self._slots:
            # A round that raised ClientFailure left its other tasks uncounted; they only queue.
            slot.load = 0
        grouped = groups is not None
        results: list[Any] = [None] * len(clients)
        payloads: list[Optional[tuple[ClientPayload, int]]] = [None] * len(clients)
        attempts = [0] * len(clients)
        queue = collections.deque(
            tuple(g) for g in (groups if grouped else [[p] for p in range(len(clients))]) if len(g))
        in_flight: dict[Any, tuple[tuple[int, ...], _Slot]] = {}
        counts: dict[str, float] = collections.defaultdict(float)
        failures, retried = [], set()

        def fail(position: int, cause: BaseException, client_at_fault: bool) -> bool:
            """Records the failed attempt; True when the client is to run again."""
            attempts[position] += 1
            failure = ClientFailure(client_ids[position], cause, attempts[position])
            failures.append(failure)
            if not client_at_fault and attempts[position] <= max_retries:
                logger.warning("%s; its actor died, running it again", failure)
                retried.add(position)
                return True
            results[position] = failure
            return False

        while queue or in_flight:
            start = time.perf_counter()
            while queue and (slot := self._free_slot()) is not None:
                task = queue.popleft()
                for position in task:
                    if payloads[position] is None:
                        export_start = time.perf_counter()
                        payloads[position] = _payload(ray, clients[position])
                        counts["export_seconds"] += time.perf_counter() - export_start
                    counts["sent_bytes"] += payloads[position][1]
                if grouped:
                    ref = slot.actor.train_cohort.remote(
                        weights_ref, [payloads[p][0] for p in task], [inputs[p] for p in task],
                        [client_ids[p] for p in task])
                else:
                    ref = getattr(slot.actor, method).remote(weights_ref, payloads[task[0]][0], inputs[task[0]])
                in_flight[ref] = (task, slot)
                slot.load += 1
            counts["dispatch_seconds"] += time.perf_counter() - start  # export included
            if not in_flight:  # every actor died: there is nowhere to send the queue
                self.top_up()
                continue
            start = time.perf_counter()
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            counts["wait_seconds"] += time.perf_counter() - start
            for ref in ready:
                task, slot = in_flight.pop(ref)
                slot.load -= 1
                start = time.perf_counter()
                try:
                    values = ray.get(ref) if grouped else [ray.get(ref)]
                except ray.exceptions.RayActorError as error:
                    if slot.alive:
                        slot.alive = False
                        counts["actor_deaths"] += 1
                    again = tuple(p for p in task if fail(p, error, client_at_fault=False))
                    if again:
                        queue.append(again)
                    continue
                except ray.exceptions.RayTaskError as error:
                    for position in task:
                        fail(position, _original(error), client_at_fault=True)
                    continue
                finally:
                    counts["gather_seconds"] += time.perf_counter() - start
                for position, value in zip(task, values):
                    if isinstance(value, BaseException):  # train_cohort: this client's own work raised
                        fail(position, value, client_at_fault=True)
                    else:
                        results[position] = value
        return results, dict(counts, clients_retried=len(retried), failures=tuple(failures))

    def _free_slot(self) -> Optional[_Slot]:
        live = [s for s in self._slots if s.alive and s.load < TASKS_PER_ACTOR]
        return min(live, key=lambda s: s.load, default=None)


def _payload(ray: Any, client: Any) -> tuple[ClientPayload, int]:
    """What goes to the actor for ``client``, and its size in bytes."""
    if isinstance(client, SourcedClient):
        # The recipe alone: pickling an object reference out of band would pin its object for good.
        return client, len(ray.cloudpickle.dumps(client.recipe))
    exported = export_dataset(client)
    return exported, exported.nbytes


def _original(error: Any) -> BaseException:
    """The exception the client's work raised, unwrapped from Ray's ``RayTaskError``."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error
