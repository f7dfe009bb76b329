"""The simulation loop: sample a cohort, run a round, evaluate, log; repeat."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from fedsim.data import ClientData
from fedsim.data.sources import ClientRecipe, RecipeStepError
from fedsim.experiment.metrics_file import MetricsAppender
from fedsim.learning.process import FederatedProcess, ServerState
from fedsim.evaluation.federated import evaluate_federated
from fedsim.metrics import to_python
from fedsim.privacy import mechanism

logger = logging.getLogger(__name__)

RoundCallback = Callable[[ServerState, dict], None]
ClientDatasetFn = Callable[[str, int], tf.data.Dataset]
# (dataset or ClientRecipe, round_num, client_id) -> the same, prepared for the round.
PrepareDatasetFn = Callable[[Any, int, str], Any]
# What the progress bar shows for a round or evaluation that measured no example (no loss, no accuracy).
NO_EXAMPLES = "no examples"


@attrs.frozen
class SimulationResult:
    """The final server state and one metrics record per round run."""

    state: ServerState
    history: list[dict]


def evaluate_population(
    process: FederatedProcess, model_weights, client_data: ClientData, clients: Optional[Sequence[str]] = None
) -> tuple[dict, dict]:
    """Sum-then-finalize metrics of ``model_weights`` over the clients of ``client_data`` (or ``clients``),
    and each scalar metric's distribution over those clients (mean, std, percentiles, worst client).

    Client ids go along, so under FedBN (``non_trainable="per_client"``) a client evaluates with its own weights.
    """
    evaluation = evaluate_federated(process, model_weights, client_data, client_ids=clients)
    distribution = {name: attrs.asdict(d) for name, d in evaluation.distributions.items()}
    return evaluation.aggregate, distribution


def evaluation_sample(client_data: ClientData, size: Optional[int], seed: int) -> Optional[list[str]]:
    """A fixed sample of ``size`` test clients, drawn once from ``seed`` (None: every client)."""
    ids = list(client_data.client_ids)
    if size is None or size >= len(ids):
        return None
    chosen = np.random.default_rng([seed, 0x5E7]).choice(len(ids), size, replace=False)
    return [ids[i] for i in sorted(chosen)]


def simulate(
    process: FederatedProcess,
    train_data: ClientData,
    rounds: int,
    sampler: Any,
    eval_data: Optional[ClientData] = None,
    eval_every: int = 0,
    metrics_path: Optional[str | Path] = None,
    progress: bool = True,
    state: Optional[ServerState] = None,
    callbacks: Sequence[RoundCallback] = (),
    client_dataset_fn: Optional[ClientDatasetFn] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    eval_clients: Optional[Sequence[str]] = None,
    prepare_dataset_fn: Optional[PrepareDatasetFn] = None,
) -> SimulationResult:
    """Runs ``rounds`` rounds of ``process`` on cohorts drawn from ``train_data``.

    Args:
      sampler: has ``sample(round_num, population_size) -> indices``; with a
        privacy mechanism in the aggregator chain, also
        ``participation(population_size)``, which must equal the mechanism's.
      eval_data: held-out clients, evaluated every ``eval_every`` rounds and
        after the last round (never when ``eval_every`` is 0).
      metrics_path: appends one JSON line per round, handed to the kernel as it is
        written. A round whose evaluation raises still gets its line, with
        ``eval_error`` (the error's type and message) in place of ``eval``,
        before the error propagates.
      progress: show a tqdm bar with the round's loss and accuracy.
      state: continue from this state instead of ``process.initialize()``.
      callbacks: called with ``(state, record)`` after each round, once its
        metrics line is written (e.g. checkpointing, TensorBoard).
      client_dataset_fn: ``(client_id, round_num) -> dataset``, for per-round
        preparation such as seeded shuffling; default the client's dataset as is.
        It builds datasets in the driver, so a Ray executor cannot build the clients
        in its actors: prefer ``prepare_dataset_fn``.
      should_stop: asked after each round (and its callbacks); True ends the
        simulation there, e.g. on SIGINT, with every finished round recorded.
      eval_clients: evaluate only these clients of ``eval_data`` (a fixed sample of
        a huge test population, ``evaluation_sample``); None: every client.
      prepare_dataset_fn: ``(dataset, round_num, client_id) -> dataset``, per-round
        preparation of a client's dataset (seeded shuffling) that also applies to a
        ``ClientRecipe``, so an executor that builds clients itself (Ray, from the
        population's ``client_source``) does it there. Not with ``client_dataset_fn``.

    An executor with ``use_source`` (Ray) is asked once whether its workers build the
    clients; if so each round passes ``ClientRecipe`` values instead of datasets.
    """
    if rounds < 0:
        raise ValueError(f"rounds={rounds} must be >= 0")
    if eval_every < 0:
        raise ValueError(f"eval_every={eval_every} must be >= 0 (0 turns evaluation off)")
    if client_dataset_fn is not None and prepare_dataset_fn is not None:
        raise ValueError(
            "pass client_dataset_fn (builds each client's dataset) or prepare_dataset_fn (prepares "
            "the population's), not both"
        )
    state = state if state is not None else process.initialize()
    client_dataset_fn = _client_dataset_fn(process, state, train_data, client_dataset_fn, prepare_dataset_fn)
    client_ids = train_data.client_ids
    # A privacy mechanism must account the sampling that runs, not one declared beside it.
    participation = getattr(sampler, "participation", None)
    mechanism.check_run(getattr(process, "aggregator", None), participation(len(client_ids)) if participation else None)
    first, last = state.round_num + 1, state.round_num + rounds
    history = []
    metrics_file = MetricsAppender(metrics_path) if metrics_path else None
    # total/initial count absolute rounds, so a resumed run's bar starts where the last one stopped.
    bar = tqdm(total=last, initial=first - 1, desc="rounds", disable=not progress, unit="round")
    try:
        for round_num in range(first, last + 1):
            start = time.perf_counter()
            cohort = [client_ids[i] for i in sampler.sample(round_num, len(client_ids))]
            datasets = [client_dataset_fn(c, round_num) for c in cohort]
            # Ids, not positions, key per-client randomness (dropouts, stragglers, client state).
            result = process.next(state, datasets, client_ids=cohort)
            state = result.state
            record = {
                "round": round_num,
                "train": to_python(dict(result.metrics)),
                "measurements": to_python(result.measurements),
                "num_clients": result.num_clients,
                "num_examples": result.num_examples,
            }
            privacy = mechanism.report(getattr(process, "aggregator", None), state.aggregator_state)
            if privacy is not None:
                record["privacy"] = privacy
            if eval_data is not None and eval_every and (round_num % eval_every == 0 or round_num == last):
                try:
                    record["eval"], record["eval_clients"] = evaluate_population(
                        process, state.model_weights, eval_data, eval_clients)
                except Exception as error:
                    # The round trained: its record must outlive the failed evaluation.
                    record["eval_error"] = f"{type(error).__name__}: {error}"
                    _write(metrics_file, record, start)
                    raise
            _write(metrics_file, record, start)
            history.append(record)
            bar.set_postfix(_postfix(history), refresh=False)
            bar.update()
            for callback in callbacks:
                callback(state, record)
            if should_stop is not None and should_stop():
                logger.info("stopping after round %d, as asked", round_num)
                break
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    return SimulationResult(state=state, history=history)


def _client_dataset_fn(
    process: Any,
    state: ServerState,
    train_data: ClientData,
    client_dataset_fn: Optional[ClientDatasetFn],
    prepare_dataset_fn: Optional[PrepareDatasetFn],
) -> Callable[[str, int], Any]:
    """``(client_id, round_num) ->`` the client's dataset, or its ``ClientRecipe`` when the
    executor's workers build clients from the population's source (decided once, here)."""
    prepare = prepare_dataset_fn or (lambda dataset, round_num, client_id: dataset)

    def dataset_fn(client_id: str, round_num: int) -> tf.data.Dataset:
        return prepare(train_data.create_tf_dataset_for_client(client_id), round_num, client_id)

    in_driver = client_dataset_fn or dataset_fn
    use_source = getattr(process.executor, "use_source", None)
    if use_source is None:
        return in_driver
    source = train_data.client_source
    if client_dataset_fn is not None or source is None:
        # Never True with a blocker or without a source: it says why once, or raises under "actors".
        use_source(source, _CLIENT_DATASET_FN if client_dataset_fn is not None else None)
        return in_driver
    spec = train_data.element_type_structure

    def recipe_fn(client_id: str, round_num: int) -> ClientRecipe:
        return prepare(ClientRecipe.start(source, client_id, spec), round_num, client_id)

    blocker = _recipe_blocker(process, state, recipe_fn, train_data.client_ids[0])
    return recipe_fn if use_source(source, blocker) else in_driver


_CLIENT_DATASET_FN = "a client_dataset_fn builds each client's dataset in the driver (pass prepare_dataset_fn)"


def _recipe_blocker(process: Any, state: ServerState, recipe_fn: Callable, client_id: str) -> Optional[str]:
    """Why a round cannot prepare recipes (a step they do not record), tried on one client."""
    try:
        recipe = recipe_fn(client_id, state.round_num + 1)
        if hasattr(process, "prepare_cohort"):
            process.prepare_cohort(state, [recipe], [client_id])
    except RecipeStepError as error:
        return str(error)
    return None


def _write(metrics_file: Optional[MetricsAppender], record: dict, start: float) -> None:
    """Stamps the round's time on ``record`` and appends it to the metrics file, if there is one."""
    record["round_time_s"] = time.perf_counter() - start
    if metrics_file:
        metrics_file.append(record)


def _postfix(history: list[dict]) -> dict:
    """The progress bar's figures, each named for what it measures.

    This round's train loss and accuracy, and the latest test accuracy with
    the round it was measured in (it is not measured every round). A round
    or evaluation over no examples has no loss or accuracy: it shows
    "no examples" rather than the last figures or a 0.
    """
    record, postfix = history[-1], {}
    if record.get("num_examples") == 0:
        postfix["train"] = NO_EXAMPLES
    loss = record["train"].get("loss")
    if isinstance(loss, (int, float)):
        postfix["train_loss"] = f"{loss:.4f}"
    accuracy = _first_accuracy(record["train"])
    if accuracy is not None:
        postfix["train_acc"] = f"{accuracy:.4f}"
    evaluated = next((r for r in reversed(history) if r.get("eval")), None)
    if evaluated is not None and evaluated["eval"].get("num_examples") == 0:
        postfix["test_acc"] = f"{NO_EXAMPLES} (round {evaluated['round']})"
        return postfix
    accuracy = _first_accuracy(evaluated["eval"]) if evaluated else None
    if accuracy is not None:
        postfix["test_acc"] = f"{accuracy:.4f} (round {evaluated['round']})"
    return postfix


def _first_accuracy(metrics: dict) -> Optional[float]:
    for name, value in metrics.items():
        if "accuracy" in name and isinstance(value, (int, float)):
            return float(value)
    return None
