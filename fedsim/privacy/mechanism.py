"""What a private aggregator (a *mechanism*) tells the accountant, and how a chain is searched for one.

A mechanism is an aggregator rule with these attributes:

* ``participation``: the run's ``Participation`` (bound when the run is built);
* ``accountant`` (``"rdp"`` or ``"pld"``) and ``target_delta``;
* ``dp_event(rounds) -> DpEvent``: the event of its first ``rounds`` rounds;
* ``describe() -> dict``: its parameters, for the privacy report;
* ``rounds(state) -> int``: how many rounds it has run, read from its state.

A chain holds at most one mechanism (two would need a joint analysis nobody
asked for). Wrappers keep their inner aggregator in ``.inner`` and its state
under ``state["inner"]``, so a chain and its state are walked together.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

from fedsim.privacy import accounting
from fedsim.privacy.participation import Participation, ParticipationError


def participation_of(mechanism: Any) -> Participation:
    """The participation ``mechanism`` was bound to, or a named error saying how to bind one."""
    if mechanism.participation is None:
        raise ParticipationError(
            f"{type(mechanism).__name__} has no participation to account or divide by: build it with "
            "participation=sampler.participation(population_size) (a config run does this itself)"
        )
    return mechanism.participation


def is_mechanism(step: Any) -> bool:
    return callable(getattr(step, "dp_event", None))


def _steps(aggregator: Any, state: Any = None):
    """(step, its state) from the outermost step inwards."""
    while aggregator is not None:
        yield aggregator, state
        inner = getattr(aggregator, "inner", None)
        state = state["inner"] if isinstance(state, dict) and inner is not None else None
        aggregator = inner


def find(aggregator: Any, state: Any = None) -> tuple[Optional[Any], Any]:
    """The chain's mechanism and its state, or ``(None, None)``."""
    found = [(step, step_state) for step, step_state in _steps(aggregator, state) if is_mechanism(step)]
    if len(found) > 1:
        names = [type(step).__name__ for step, _ in found]
        raise ParticipationError(f"the aggregator chain holds {len(found)} privacy mechanisms {names}; use one")
    return found[0] if found else (None, None)


def bind(aggregator: Any, participation: Participation) -> Any:
    """The chain with ``participation`` set on its mechanism (checked against one set already)."""
    if aggregator is None:
        return None
    if is_mechanism(aggregator):
        if aggregator.participation is not None and aggregator.participation != participation:
            raise ParticipationError(
                f"{type(aggregator).__name__} was built for {aggregator.participation.describe()}, but the run "
                f"samples {participation.describe()}; build it from the run's sampler "
                "(participation=sampler.participation(population_size))"
            )
        return attrs.evolve(aggregator, participation=participation)
    inner = getattr(aggregator, "inner", None)
    if inner is None:
        return aggregator
    return attrs.evolve(aggregator, inner=bind(inner, participation))


def check_run(aggregator: Any, participation: Optional[Participation]) -> None:
    """Raises unless the chain's mechanism (if any) accounts exactly ``participation``."""
    mechanism, _ = find(aggregator)
    if mechanism is None:
        return
    if participation is None:
        raise ParticipationError(
            f"{type(mechanism).__name__} needs the run's participation for its accounting, but the sampler "
            "does not state one; give the sampler a participation(population_size) method"
        )
    if mechanism.participation != participation:
        got = None if mechanism.participation is None else mechanism.participation.describe()
        raise ParticipationError(
            f"{type(mechanism).__name__} accounts {got}, but the run samples {participation.describe()}; "
            "build it with participation=sampler.participation(population_size)"
        )


def needs_value_size(aggregator: Any) -> bool:
    """Whether the chain's mechanism is calibrated to the size of a client value (distributed DP)."""
    step, _ = find(aggregator)
    return step is not None and "dimension" in attrs.fields_dict(type(step))


def bind_value_size(aggregator: Any, size: int) -> Any:
    """The chain with ``dimension=size`` set on its mechanism (checked against one set already)."""
    if is_mechanism(aggregator):
        if aggregator.dimension is not None and aggregator.dimension != size:
            raise ParticipationError(
                f"{type(aggregator).__name__}: dimension={aggregator.dimension}, but a client sends {size} "
                "numbers (the model's trainable weights and the algorithm's extras); remove dimension, it is "
                "read from the process"
            )
        return attrs.evolve(aggregator, dimension=size)
    return attrs.evolve(aggregator, inner=bind_value_size(aggregator.inner, size))


def epsilon(mechanism: Any, rounds: int) -> float:
    """``mechanism``'s epsilon at its ``target_delta`` after ``rounds`` rounds.

    A mechanism whose privacy curve no ``dp_accounting`` event states exactly
    (the summed discrete Gaussian) computes it itself in ``rdp_epsilon``.
    """
    own = getattr(mechanism, "rdp_epsilon", None)
    if callable(own):
        return float(own(rounds))
    return accounting.epsilon(
        mechanism.dp_event(rounds), mechanism.target_delta, mechanism.accountant, mechanism.participation.relation
    )


def report(aggregator: Any, state: Any) -> Optional[dict]:
    """What was proved so far, for the round's record: epsilon, delta, accountant, relation, sampling,
    and the mechanism's parameters; None when the chain holds no mechanism."""
    mechanism, mechanism_state = find(aggregator, state)
    if mechanism is None:
        return None
    rounds = mechanism.rounds(mechanism_state)
    return {
        "epsilon": epsilon(mechanism, rounds),
        "delta": mechanism.target_delta,
        "rounds": rounds,
        "accountant": mechanism.accountant,
        "mechanism": type(mechanism).__name__,
        **mechanism.participation.describe(),
        **mechanism.describe(),
    }
