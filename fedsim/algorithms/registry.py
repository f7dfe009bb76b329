"""The one registry of algorithm names, and how a run's blocks reach an algorithm's factory.

An algorithm is one module with a factory that returns an ``Algorithm``
record; registering it is one line in ``ALGORITHMS``. The factory's
signature is its whole declaration of what it takes:

- parameters named in ``RUN_INPUTS`` come from the run, not from the
  ``[algorithm]`` table: ``client_optimizer`` (the client optimizer block),
  ``client_learning_rate`` (that block's rate, for algorithms whose analysis
  assumes plain local SGD; any other optimizer is refused), ``weighted``
  (``[client] weighted``) and ``population_size`` (the number of training
  clients, for algorithms that scale by ``|S| / N``);
- every other parameter is a hyperparameter of the ``[algorithm]`` table,
  with the signature's default and type.

The record declares the rest: ``client_state`` (rounds need real client ids)
and ``one_batch`` (batch size and local epochs do not apply).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Mapping, Optional

from fedsim.algorithms import (
    fedavg,
    feddyn,
    fednova,
    fedprox,
    fedsgd,
    mime_lite,
    q_fedsgd,
    qffl,
    scaffold,
    scaffold_option_i,
)
from fedsim.learning.algorithm import Algorithm
from fedsim.optimizers import SGD

ALGORITHMS: dict[str, Callable[..., Algorithm]] = {
    "fedavg": fedavg.fedavg,
    "feddyn": feddyn.feddyn,
    "fednova": fednova.fednova,
    "fedprox": fedprox.fedprox,
    "fedsgd": fedsgd.fedsgd,
    "mime_lite": mime_lite.mime_lite,
    "q_fedsgd": q_fedsgd.q_fedsgd,
    "qffl": qffl.qffl,
    "scaffold": scaffold.scaffold,
    "scaffold_option_i": scaffold_option_i.scaffold_option_i,
}

RUN_INPUTS = ("client_optimizer", "client_learning_rate", "weighted", "population_size")


class AlgorithmBuildError(ValueError):
    """An algorithm combined with run inputs it cannot use (e.g. FedNova with a momentum client optimizer)."""


def factory(name: str) -> Callable[..., Algorithm]:
    """The factory registered as ``name``; a ValueError lists the names there are."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; registered: {sorted(ALGORITHMS)}") from None


def hyperparameters(name: str) -> dict[str, inspect.Parameter]:
    """The ``[algorithm]`` keys of ``name``: its factory's parameters that are not run inputs."""
    parameters = inspect.signature(factory(name)).parameters
    return {key: p for key, p in parameters.items() if key not in RUN_INPUTS}


def hyperparameter_types(name: str) -> dict[str, Any]:
    """The annotated type of each hyperparameter (``Any`` where the factory leaves it out)."""
    hints = typing.get_type_hints(factory(name))
    return {key: hints.get(key, Any) for key in hyperparameters(name)}


def takes(name: str, run_input: str) -> bool:
    """Whether algorithm ``name`` takes the run input ``run_input`` (one of ``RUN_INPUTS``)."""
    return run_input in inspect.signature(factory(name)).parameters


def plain_sgd_rate(name: str, optimizer: Any) -> float:
    """The learning rate of ``optimizer``, which must be constant-rate SGD without momentum."""
    if not isinstance(optimizer, SGD) or optimizer.momentum or callable(optimizer.learning_rate):
        raise AlgorithmBuildError(
            f"algorithm {name!r} runs plain local SGD; set the client optimizer to "
            f"name = \"sgd\" with momentum = 0 and a constant learning_rate (got {optimizer!r})"
        )
    return float(optimizer.learning_rate)


def make_algorithm(
    name: str,
    params: Optional[Mapping[str, Any]] = None,
    *,
    client_optimizer: Any = None,
    weighted: Optional[bool] = None,
    population_size: Optional[int] = None,
) -> Algorithm:
    """The ``Algorithm`` record of ``name`` with hyperparameters ``params`` and the run's inputs.

    A run input left as None keeps the factory's default; one the algorithm
    does not take raises ``AlgorithmBuildError`` instead of being ignored.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(hyperparameters(name)))
    if unknown:
        raise AlgorithmBuildError(
            f"algorithm {name!r} has no hyperparameter {unknown}; it takes {sorted(hyperparameters(name))}"
        )
    if client_optimizer is not None:
        if takes(name, "client_optimizer"):
            params["client_optimizer"] = client_optimizer
        elif takes(name, "client_learning_rate"):
            params["client_learning_rate"] = plain_sgd_rate(name, client_optimizer)
        else:
            raise AlgorithmBuildError(
                f"algorithm {name!r} has no client optimizer (its server optimizer takes the step); "
                f"remove the client optimizer (got {client_optimizer!r})"
            )
    if weighted is not None:
        if not takes(name, "weighted"):
            raise AlgorithmBuildError(
                f"algorithm {name!r} fixes how clients are weighted; leave weighted unset (got {weighted!r})"
            )
        params["weighted"] = weighted
    if takes(name, "population_size"):
        if population_size is None:
            raise AlgorithmBuildError(f"algorithm {name!r} needs the population size (number of clients)")
        params["population_size"] = population_size
    return factory(name)(**params)
