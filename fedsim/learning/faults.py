"""What a round does when clients fail: retry, drop (counted) or stop; non-finite updates zeroed.

A week-long simulation must survive one bad client, and must never let one
NaN update poison the model. Failures are never silent: every dropped or
zeroed client is logged with its id and reported in the round's
measurements (``faults/...``), so the metrics file shows what happened.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import attrs
import numpy as np

logger = logging.getLogger(__name__)

ON_CLIENT_FAILURE = ("drop", "raise")
ON_NONFINITE_UPDATE = ("zero", "raise")


def brief(error: BaseException) -> str:
    """The error's own message, without TensorFlow's graph-execution boilerplate lines."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[")
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith(noise)]
    return " ".join(kept) or type(error).__name__


class ClientFailure(RuntimeError):
    """A client's work failed: ``client_id``, the original ``error`` and the ``attempts`` made."""

    def __init__(self, client_id: Any, error: BaseException, attempts: int = 1):
        super().__init__(f"client {client_id!r} failed (attempt {attempts}): {type(error).__name__}: {brief(error)}")
        self.client_id = client_id
        self.error = error
        self.attempts = attempts


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

    Attributes:
      client_retries: further attempts for a client whose work raises.
      on_client_failure: after the retries, ``"drop"`` the client from the round
        (logged, counted in ``faults/clients_dropped``) or ``"raise"`` a ``ClientFailure``.
      on_nonfinite_update: ``"zero"`` a delta holding NaN/Inf (the client then counts
        nothing, ``faults/nonfinite_updates``) or ``"raise"`` a ``NonFiniteUpdateError``.
    """

    client_retries: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    on_client_failure: str = attrs.field(default="drop", validator=_choice(ON_CLIENT_FAILURE))
    on_nonfinite_update: str = attrs.field(default="zero", validator=_choice(ON_NONFINITE_UPDATE))


def train_isolating_failures(
    executor: Any, model_weights: Any, datasets: Sequence[Any], client_ids: Sequence[Any], policy: FaultPolicy
) -> tuple[list[Any], list[int], dict[str, float]]:
    """Runs the cohort; if it fails, runs each client alone to find and handle the failing ones.

    Returns the outputs, the cohort positions they belong to, and measurements.
    The fast path is one call for the whole cohort; only a failure pays for
    client-by-client runs.
    """
    try:
        outputs = executor.train(model_weights, datasets)
        return outputs, list(range(len(outputs))), {}
    except Exception as error:  # noqa: BLE001 - isolated and reported per client below
        logger.warning("cohort training failed (%s: %s); running clients one by one", type(error).__name__, brief(error))
    outputs, kept, retried, failures = [], [], 0, []
    for position, (client_id, dataset) in enumerate(zip(client_ids, datasets)):
        output, attempts, failure = _attempt(executor, model_weights, dataset, client_id, policy.client_retries + 1)
        retried += attempts > 1
        if failure is None:
            outputs.append(output)
            kept.append(position)
        elif policy.on_client_failure == "raise":
            raise failure from failure.error
        else:
            logger.warning("%s; dropped from this round", failure)
            failures.append(failure)
    if not outputs:
        first = failures[0]
        raise ClientFailure(first.client_id, first.error, first.attempts) from first.error
    return outputs, kept, {"faults/clients_retried": float(retried), "faults/clients_dropped": float(len(failures))}


def _attempt(executor: Any, model_weights: Any, dataset: Any, client_id: Any, max_attempts: int):
    """``(output, attempts made, None)`` on success, ``(None, attempts, ClientFailure)`` otherwise."""
    for attempt in range(1, max_attempts + 1):
        try:
            return executor.train(model_weights, [dataset])[0], attempt, None
        except Exception as error:  # noqa: BLE001 - becomes a ClientFailure
            failure = ClientFailure(client_id, error, attempt)
    return None, max_attempts, failure


def zero_nonfinite_updates(
    outputs: Sequence[Any], client_ids: Sequence[Any], policy: FaultPolicy
) -> tuple[list[Any], dict[str, float]]:
    """Outputs with every non-finite delta zeroed (it then counts nothing), and the count."""
    screened, count = [], 0
    for client_id, output in zip(client_ids, outputs):
        if all(np.isfinite(d).all() for d in output.delta):
            screened.append(output)
            continue
        if policy.on_nonfinite_update == "raise":
            raise NonFiniteUpdateError(
                f"client {client_id!r} sent an update holding NaN or Inf; check its data for "
                "non-finite values or lower the learning rate (or set faults.on_nonfinite_update = \"zero\")"
            )
        logger.warning("client %r sent a non-finite update; zeroed (it counts nothing this round)", client_id)
        count += 1
        screened.append(
            attrs.evolve(
                output,
                delta=[np.zeros_like(d) for d in output.delta],
                update_weight=0.0,
                num_examples=0,
                metrics=type(output.metrics)(
                    (name, _zeros(value)) for name, value in output.metrics.items()
                ),
            )
        )
    return screened, {"faults/nonfinite_updates": float(count)}


def _zeros(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_zeros(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _zeros(v)) for k, v in value.items())
    return np.zeros_like(np.asarray(value))
