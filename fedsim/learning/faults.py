"""What a round does when clients fail: retry, drop (counted) or stop; non-finite updates zeroed.

A week-long simulation must survive one bad client, and must never let one
NaN update poison the model. Failures are never silent: every dropped or
zeroed client is logged with its id and reported in the round's
measurements (``faults/...``), so the metrics file shows what happened.

This is the one place the policy lives: every executor yields, per client,
an output or a ``ClientFailure`` record, and the round hands them here, for
every algorithm alike.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import attrs
import numpy as np

from fedsim.client.task import ClientFailure, ClientOutput

logger = logging.getLogger(__name__)

ON_CLIENT_FAILURE = ("drop", "raise")
ON_NONFINITE_UPDATE = ("zero", "raise")


class NonFiniteUpdateError(FloatingPointError):
    """A client sent a delta holding NaN or Inf, and the fault policy says to stop."""


def _choice(allowed: tuple[str, ...]):
    def check(instance, attribute, value):
        if value not in allowed:
            raise ValueError(f"{attribute.name}={value!r} must be one of {list(allowed)}")

    return check


@attrs.frozen
class FaultPolicy:
    """How a round treats failing clients and non-finite updates.

    A failed client is never counted as a success: it yields no output, so it
    contributes no update, no examples and no metrics.

    Attributes:
      client_retries: under ``"drop"``, further attempts for a client whose work raises
        (counted in ``faults/clients_retried``); unused under ``"raise"``.
      on_client_failure: ``"drop"`` a client whose retries all failed from the round
        (logged, counted in ``faults/clients_dropped``; a round where every client
        fails still stops the run), or ``"raise"``: the first failure, in cohort order,
        stops the run at once, without retries, with a ``ClientFailure`` that names the
        client and the original error's type and message (the error is its ``__cause__``).
      on_nonfinite_update: ``"zero"`` a delta holding NaN/Inf (the client then counts
        nothing, ``faults/nonfinite_updates``) or ``"raise"`` a ``NonFiniteUpdateError``.
    """

    client_retries: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    on_client_failure: str = attrs.field(default="drop", validator=_choice(ON_CLIENT_FAILURE))
    on_nonfinite_update: str = attrs.field(default="zero", validator=_choice(ON_NONFINITE_UPDATE))


def run_clients(
    executor: Any,
    model_weights: Any,
    datasets: Sequence[Any],
    inputs: Sequence[Any],
    client_ids: Sequence[Any],
    policy: FaultPolicy,
) -> tuple[list[ClientOutput], list[int], dict[str, float]]:
    """Runs the cohort on ``executor`` under ``policy``.

    Returns the outputs, the cohort positions they belong to (dropped clients
    are missing), and the ``faults/...`` measurements. Under ``"drop"``, the
    clients that failed run again (together, on the same executor) up to
    ``policy.client_retries`` times; under ``"raise"``, the first failure raises.
    """
    actor_deaths = 0

    def train(positions: Sequence[int]) -> list:
        nonlocal actor_deaths
        results = executor.train(
            model_weights, [datasets[i] for i in positions], [inputs[i] for i in positions],
            [client_ids[i] for i in positions],
        )
        stats = getattr(executor, "last_round_stats", None)  # executors that count their own faults (Ray)
        actor_deaths += stats.actor_deaths if stats is not None else 0
        return list(results)

    results = train(range(len(datasets)))
    if policy.on_client_failure == "raise":
        _raise_first_failure(results)
    retried = set()
    for _ in range(policy.client_retries):
        failed = [i for i, r in enumerate(results) if isinstance(r, ClientFailure)]
        if not failed:
            break
        for i in failed:
            logger.warning("%s; running it again", results[i])
        retried.update(failed)
        for i, result in zip(failed, train(failed)):
            if isinstance(result, ClientFailure):
                result = ClientFailure(client_ids[i], result.error, results[i].attempts + 1)
            results[i] = result
    failures = [r for r in results if isinstance(r, ClientFailure)]
    if failures and len(failures) == len(results):
        _raise_first_failure(results)
    for failure in failures:
        logger.warning("%s; dropped from this round", failure)
    kept = [i for i, r in enumerate(results) if not isinstance(r, ClientFailure)]
    measurements = {
        "faults/clients_retried": float(len(retried)),
        "faults/clients_dropped": float(len(failures)),
    }
    if hasattr(executor, "last_round_stats"):
        measurements["faults/actor_deaths"] = float(actor_deaths)
    return [results[i] for i in kept], kept, measurements


def _raise_first_failure(results: Sequence[Any]) -> None:
    """Raises the first ``ClientFailure`` among ``results`` (cohort order), from its original error."""
    for result in results:
        if isinstance(result, ClientFailure):
            raise result from result.error


def zero_nonfinite_messages(
    outputs: Sequence[ClientOutput],
    messages: Sequence[Any],
    update_weights: Sequence[float],
    client_ids: Sequence[Any],
    policy: FaultPolicy,
) -> tuple[list[ClientOutput], list[Any], list[float], dict[str, float]]:
    """Outputs, messages and update weights with every non-finite message zeroed, and the count.

    A message is non-finite when any of its arrays (delta or extras) holds NaN
    or Inf. Zeroed, it counts nothing: update weight 0, no examples, zero
    metrics, and its client state is not kept.
    """
    outputs, messages, update_weights = list(outputs), list(messages), list(update_weights)
    count = 0
    for index, (client_id, message) in enumerate(zip(client_ids, messages)):
        arrays = list(message.delta) + [a for extra in message.extras.values() for a in extra]
        if all(np.isfinite(a).all() for a in arrays):
            continue
        if policy.on_nonfinite_update == "raise":
            raise NonFiniteUpdateError(
                f"client {client_id!r} sent an update holding NaN or Inf; check its data for "
                "non-finite values or lower the learning rate (or set faults.on_nonfinite_update = \"zero\")"
            )
        logger.warning("client %r sent a non-finite update; zeroed (it counts nothing this round)", client_id)
        count += 1
        messages[index] = attrs.evolve(
            message,
            delta=[np.zeros_like(a) for a in message.delta],
            extras={name: [np.zeros_like(a) for a in extra] for name, extra in message.extras.items()},
            client_state=None,
        )
        output = outputs[index]
        outputs[index] = attrs.evolve(
            output,
            num_examples=0,
            update_weight=0.0,
            metrics=type(output.metrics)((name, _zeros(value)) for name, value in output.metrics.items()),
        )
        update_weights[index] = 0.0
    return outputs, messages, update_weights, {"faults/nonfinite_updates": float(count)}


def _zeros(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_zeros(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _zeros(v)) for k, v in value.items())
    return np.zeros_like(np.asarray(value))
