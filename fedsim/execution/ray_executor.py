"""The Ray executor: client work in Ray actors, on this machine or a cluster.

Each actor builds one compiled ``ClientWork`` from a picklable recipe (``model_fn``
plus the client optimizer and flags) and keeps it for the whole run, so tracing
happens once per actor, not once per round. A round's model weights go into the
object store once and every task gets the reference.

Where client data comes from (``client_data``): when the population has a
``ClientSource`` (a SQLite file, arrays, a seeded generator; see
``fedsim.data.sources``), ``simulate`` hands the round ``ClientRecipe`` values
instead of datasets; the executor puts the source in the object store once and
sends each actor only the client id and its preparation steps, and the actor
reads and prepares the client itself, so the driver's cost per round does not
grow with the data or the population. Otherwise the driver exports each client's
prepared elements as NumPy arrays (see ``ray_datasets``) every round, and says so
once in the log; ``client_data="actors"`` refuses that with ``NoClientSourceError``.

How an actor trains (``actor_executor``): its share of the cohort in one
compiled call, as the in-process vectorized executor does (``"vectorized"``;
one task per actor and round), or one client per task (``"sequential"``);
``"auto"`` (default) takes the first when the client work can be vectorized
and says once in the log why not otherwise. Both give the in-process
executors' numbers: the vectorized executor's and the sequential one's.

Ray is optional: ``pip install 'fedsim[ray]'``. It is imported when an executor is
built, so ``import fedsim`` works without it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional, Sequence

import attrs

from fedsim.client import ClientFailure, ClientTask
from fedsim.data.sources import ClientRecipe, ClientSource, NoClientSourceError
from fedsim.execution.failures import with_defaults
from fedsim.execution.ray_datasets import SourcedClient
from fedsim.execution.ray_pool import ActorPool, RoundStats
from fedsim.execution.ray_worker import WorkRecipe
from fedsim.execution.cohort_io import VectorizationError

logger = logging.getLogger(__name__)

__all__ = ["ACTOR_EXECUTORS", "CLIENT_DATA", "ClientFailure", "NoClientSourceError", "RayExecutor", "RoundStats"]

# Where training clients' datasets are built: by the actors from the population's source,
# exported from the driver, or the actors whenever the run can give them a source.
CLIENT_DATA = ("auto", "actors", "driver")
# How an actor trains its clients: a cohort share in one compiled call, or one client per task.
ACTOR_EXECUTORS = ("auto", "vectorized", "sequential")


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says which extra to install."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "the Ray executor needs Ray, which is not installed: pip install 'fedsim[ray]'"
        ) from error
    return ray


class RayExecutor:
    """Runs client work in Ray actors; the in-process executors' interface and answers (see ``actor_executor``).

    Args:
      model_fn: no-argument callable building the fedsim model; it must pickle
        (module-level function, closure or ``functools.partial``), since each
        actor builds its own copy.
      task: the ``ClientTask`` every actor's ``ClientWork`` runs (default: ``ClientTask()``,
        i.e. SGD(0.01) or the model's own ``train_on_batch``, weighted).
      address: a running cluster to join (``"127.0.0.1:6379"``, ``"auto"``); None starts a
        private local Ray instance with ``num_actors`` CPUs (default: all of them).
      num_actors: actors to run; default one per GPU of the cluster, or one per CPU
        when it has none. Each actor takes 1 GPU (or 1 CPU).
      max_retries: times a client is re-run after its actor died. A client whose own work
        raised yields a ``ClientFailure`` record at once, as on every executor: the round's
        fault policy retries, drops or raises.
      start_timeout: seconds to wait for actors to start and build their model.
      client_data: where training clients' datasets are built. ``"actors"``: each actor
        reads its clients from the population's ``ClientSource``; a run that cannot give
        one (no source, one that does not pickle, a ``client_dataset_fn``, a preparation
        step a recipe cannot record) raises ``NoClientSourceError``. ``"driver"``: the
        driver exports every client's data each round. ``"auto"`` (default): the actors
        when the run gives a source, else the driver, said once in the log.
        Evaluation datasets always come from the driver.
      actor_executor: how each actor trains. ``"vectorized"``: its share of the cohort
        (every ``num_actors``-th client) in one task and one compiled call, as the
        in-process vectorized executor does; raises ``VectorizationError`` for client
        work that cannot be vectorized. ``"sequential"``: one client per task, the
        client work's own loop. ``"auto"`` (default): vectorized when it can, else
        sequential, said once in the log. Evaluation runs one client per task.

    After each ``train``/``evaluate``, ``last_round_stats`` (a ``RoundStats``) says which
    clients failed or were re-run after an actor died, and where the time went.
    ``trains_cohorts`` says which way ``actor_executor`` went: True when the actors train
    cohort shares in one call.
    """

    name = "ray"

    def __init__(
        self,
        model_fn: Callable[[], Any],
        task: Optional[ClientTask] = None,
        *,
        address: Optional[str] = None,
        num_actors: Optional[int] = None,
        max_retries: int = 2,
        start_timeout: float = 300.0,
        client_data: str = "auto",
        actor_executor: str = "auto",
    ):
        if client_data not in CLIENT_DATA:
            raise ValueError(f"client_data={client_data!r} must be one of {list(CLIENT_DATA)}")
        if actor_executor not in ACTOR_EXECUTORS:
            raise ValueError(f"actor_executor={actor_executor!r} must be one of {list(ACTOR_EXECUTORS)}")
        if not callable(model_fn):
            raise TypeError(
                f"model_fn must be a no-argument callable building the model, got {model_fn!r}"
            )
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ValueError(f"max_retries={max_retries!r} must be an integer >= 0")
        if num_actors is not None and not (isinstance(num_actors, int) and num_actors >= 1):
            raise ValueError(
                f"num_actors={num_actors!r} must be a positive integer or None (one per device)"
            )
        ray = import_ray()
        # No task: ClientWork's defaults (SGD(0.01), or the model's own train_on_batch).
        recipe = WorkRecipe(model_fn, task if task is not None else ClientTask())
        _check_picklable(ray, recipe)
        self._ray = ray
        self._owns_ray = _connect(ray, address, num_actors)
        self.max_retries = max_retries
        self.client_data = client_data
        self.last_round_stats: Optional[RoundStats] = None
        # id(source) -> (source, its object-store reference): each population (training,
        # evaluation) is put once per run.
        self._sources: dict[int, tuple[ClientSource, Any]] = {}
        self._said: set[str] = set()  # log lines said once per executor
        # Why the driver ships training data under "auto", once use_source found out.
        self._driver_reason = (
            "the round was given datasets, not ClientRecipes (simulate gives recipes for a population "
            "with a client source)"
        )
        num_actors, options = _actor_layout(ray, num_actors)
        self._pool = ActorPool(ray, recipe, num_actors, options, start_timeout)
        self.trains_cohorts = self._choose_actor_executor(actor_executor)

    @classmethod
    def factory(cls, model_fn: Callable[[], Any], **options: Any) -> Callable[[Any], "RayExecutor"]:
        """An ``executor_fn`` for ``build_fedavg``: builds the executor from the process's ClientWork.

        ``model_fn`` must be the one given to ``build_fedavg`` (ClientWork keeps only the
        built model); the task is read from the ClientWork. ``options``
        are the keyword arguments of ``RayExecutor`` (``address``, ``num_actors``, ...).
        """

        def executor_fn(client_work: Any) -> "RayExecutor":
            return cls(model_fn, client_work.task, **options)

        return executor_fn

    def use_source(self, source: Optional[ClientSource], blocker: Optional[str] = None) -> bool:
        """Whether the actors build this run's training clients from ``source`` (then pass
        ``ClientRecipe`` values to ``train``); False: pass datasets, the driver exports them.

        ``blocker`` says why the caller cannot make recipes, if it cannot (``simulate``
        passes one for a ``client_dataset_fn``, say).

        Raises:
          NoClientSourceError: under ``client_data="actors"``, when the actors cannot build the clients.
        """
        if self.client_data == "driver":
            return False
        reason = blocker
        if reason is None and source is None:
            reason = (
                "the population has no client source (ClientData.client_source is None: built by a "
                "function, or a split of another population); describe it with "
                "ClientData.with_client_source"
            )
        if reason is None and id(source) not in self._sources:  # a resumed run keeps its reference
            reason = self._put_source(source)
        if reason is None:
            return True
        if self.client_data == "actors":
            raise NoClientSourceError(
                f"client_data='actors', but the actors cannot build this run's clients: {reason}; or "
                "use client_data='driver' (or 'auto') to have the driver ship every client's data"
            )
        self._driver_reason = reason
        self._check_driver_data("train")
        return False

    def builds_evaluation_clients(self, source: Optional[ClientSource]) -> bool:
        """Whether the actors build the evaluation clients of the population with ``source``
        (then pass ``ClientRecipe`` values to ``evaluate``); False: the driver exports them."""
        if self.client_data == "driver" or source is None:
            return False
        problem = None if id(source) in self._sources else self._put_source(source)
        if problem is not None:
            self._say_once(f"the Ray executor exports evaluation datasets from the driver: {problem}")
        return problem is None

    @property
    def actors(self) -> list:
        """Handles of the live actors (for inspection and fault-injection tests)."""
        return self._pool.actors

    def train(
        self,
        model_weights: Any,
        datasets: Sequence[Any],
        inputs: Optional[Sequence[Any]] = None,
        client_ids: Optional[Sequence[Any]] = None,
    ) -> list:
        """Per client, in cohort order, its ``ClientOutput`` or a ``ClientFailure``.

        ``client_ids`` name clients in failures and stats; default: cohort positions.
        """
        return self._run("train", model_weights, datasets, inputs, client_ids)

    def evaluate(
        self,
        model_weights: Any,
        datasets: Sequence[Any],
        client_ids: Optional[Sequence[Any]] = None,
    ) -> list:
        """Unfinalized metrics per client, in cohort order; raises the first client's failure."""
        results = self._run("evaluate", model_weights, datasets, None, client_ids)
        for result in results:
            if isinstance(result, ClientFailure):
                raise result from result.error
        return results

    def trace_counts(self) -> list[int]:
        """How many times each live actor traced its training function (1 per element spec)."""
        return self._pool.trace_counts()

    def shutdown(self) -> None:
        """Kills the actors, and stops Ray if this executor started or joined it."""
        self._pool.shutdown()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()

    def _choose_actor_executor(self, actor_executor: str) -> bool:
        """Whether the actors train cohort shares in one call (see ``actor_executor``)."""
        if actor_executor == "sequential":
            return False
        blocker = self._ray.get(self._pool.actors[0].cohort_blocker.remote())
        if blocker is None:
            return True
        if actor_executor == "vectorized":
            self.shutdown()
            raise VectorizationError(
                f"actor_executor='vectorized', but the actors cannot train a cohort in one call: {blocker}; "
                "use actor_executor='sequential' (or 'auto')")
        logger.info("the Ray actors train one client per task: %s", blocker)
        return False

    def _run(self, method: str, model_weights: Any, datasets: Sequence[Any], inputs, client_ids) -> list:
        inputs, ids = with_defaults(datasets, inputs, client_ids)
        if len(ids) != len(datasets):
            raise ValueError(
                f"got {len(datasets)} datasets but {len(ids)} client ids; pass one id per dataset"
            )
        built = sum(isinstance(d, ClientRecipe) for d in datasets)
        if built < len(datasets):
            self._check_driver_data(method)
        start = time.perf_counter()
        self._pool.top_up()  # replaces actors that died in an earlier round
        put_start = time.perf_counter()
        weights_ref = self._ray.put(model_weights)
        clients = [self._sourced(d) if isinstance(d, ClientRecipe) else d for d in datasets]
        put_seconds = time.perf_counter() - put_start
        groups = None
        if method == "train" and self.trains_cohorts:
            # Every actor-count-th client: one task per actor, and ragged sizes mixed across them.
            actors = len(self._pool.actors)
            groups = [list(range(first, len(clients), actors)) for first in range(actors)]
        results, counts = self._pool.run(method, weights_ref, clients, inputs, ids, self.max_retries, groups)
        kept = [r for r in results if not isinstance(r, ClientFailure)]
        failed = tuple(i for i, r in enumerate(results) if isinstance(r, ClientFailure))
        self.last_round_stats = RoundStats(
            num_clients=len(datasets),
            clients_retried=counts["clients_retried"],
            failed_positions=failed,
            failed_client_ids=tuple(ids[i] for i in failed),
            actor_deaths=int(counts.get("actor_deaths", 0)),
            failures=counts["failures"],
            built_by_actors=built,
            sent_bytes=int(counts.get("sent_bytes", 0)),
            export_seconds=counts.get("export_seconds", 0.0),
            put_seconds=put_seconds,
            dispatch_seconds=counts.get("dispatch_seconds", 0.0),
            wait_seconds=counts.get("wait_seconds", 0.0),
            gather_seconds=counts.get("gather_seconds", 0.0),
            rebuild_seconds=sum(r.rebuild_seconds for r in kept),
            compute_seconds=sum(r.compute_seconds for r in kept),
            wall_seconds=time.perf_counter() - start,
        )
        return [r if isinstance(r, ClientFailure) else r.value for r in results]

    def _check_driver_data(self, method: str) -> None:
        """Datasets built in the driver are exported: refused for training under "actors", else said once."""
        if self.client_data == "driver":
            return
        if method == "evaluate":
            self._say_once("the Ray executor exports evaluation datasets from the driver")
        elif self.client_data == "actors":
            raise NoClientSourceError(
                "client_data='actors', but this cohort's datasets were built in the driver; pass "
                "ClientRecipe values (simulate does, for a population with a client source), or use "
                "client_data='driver' (or 'auto') to have the driver ship them"
            )
        else:
            self._say_once(f"the Ray executor ships every client's data from the driver each round: {self._driver_reason}")

    def _sourced(self, recipe: ClientRecipe) -> SourcedClient:
        """The recipe as sent: its source put in the object store once per run, then referenced."""
        if id(recipe.source) not in self._sources:
            problem = self._put_source(recipe.source)
            if problem is not None:
                raise NoClientSourceError(f"the actors cannot build client {recipe.client_id!r}: {problem}")
        return SourcedClient([self._sources[id(recipe.source)][1]], attrs.evolve(recipe, source=None))

    def _put_source(self, source: ClientSource) -> Optional[str]:
        """Puts ``source`` in the object store (the one pickling it gets); else says why it does not pickle."""
        try:
            self._sources[id(source)] = (source, self._ray.put(source))
        except Exception as error:  # noqa: BLE001 - any pickling failure says the same thing
            return (
                f"its client source {source!r} does not pickle ({type(error).__name__}: {error}); build it "
                "from module-level functions and plain values"
            )
        return None

    def _say_once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            logger.info(message)


def _connect(ray: Any, address: Optional[str], num_cpus: Optional[int]) -> bool:
    """Starts or joins Ray unless this process is connected already; True if it did."""
    if ray.is_initialized():
        return False
    # A simulator that starts Ray for the user should not report usage; set the
    # variable yourself to choose otherwise.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        # "local": a private instance, even if a cluster started with `ray start` is running here.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    logger.info("Ray resources: %s", ray.cluster_resources())
    return True


def _actor_layout(ray: Any, num_actors: Optional[int]) -> tuple[int, dict]:
    """How many actors, and what each one reserves: a GPU each if there are GPUs, else a CPU."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return num_actors or gpus, {"num_cpus": 1, "num_gpus": 1}
    return num_actors or max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}


def _check_picklable(ray: Any, recipe: WorkRecipe) -> None:
    try:
        ray.cloudpickle.dumps(recipe)
    except Exception as error:
        raise TypeError(
            f"the Ray executor must send model_fn and the client optimizer to its actors, but "
            f"they do not pickle ({type(error).__name__}: {error}); define model_fn at module "
            "level or as a functools.partial of one, without live TensorFlow objects in its closure"
        ) from error
