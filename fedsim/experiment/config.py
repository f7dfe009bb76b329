"""Loading experiment configs: TOML -> validated, frozen ``RunConfig``.

cattrs turns the TOML tables into the attrs classes of :mod:`blocks`; a
strict converter (:mod:`fedsim.experiment.structuring`) rejects unknown keys
(suggesting the nearest valid one), wrong types (``"10"`` or ``10.5`` for an
int), and unknown block names. Every problem is reported at once as
``key.path: what is wrong``. This module adds what needs the library: the
optimizers' classes and the algorithms' factory signatures.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import attrs
import cattrs
import tomli_w

from fedsim.algorithms import registry
from fedsim.algorithms.registry import ALGORITHMS
from fedsim.experiment.algorithm_blocks import AlgorithmChoice, ClientConfig
from fedsim.experiment.blocks import BLOCK_KINDS, Optimizer, RunConfig
# ConfigError and the override helpers are importable from here, as before.
from fedsim.experiment.config_source import ConfigError, apply_overrides, parse_override, read_toml  # noqa: F401
from fedsim.experiment.structuring import (
    at_key,
    base_converter,
    checked_name,
    finite_float,
    located,
    named,
    on_its_field,
    structure,
    suggest,
)
from fedsim.optimizers import OPTIMIZERS, SCHEDULES
from fedsim.optimizers.schedules import LearningRate, Schedule


def _named_unstructure(converter: cattrs.Converter, name: str):
    """Unstructure hook: a library object -> its table, ``name`` first."""

    def unstructure(value: Any) -> dict[str, Any]:
        return {"name": name, **{f.name: converter.unstructure(getattr(value, f.name)) for f in attrs.fields(type(value))}}

    return unstructure


def _learning_rate(converter: cattrs.Converter):
    schedule = named(converter, SCHEDULES, None)

    def structure(value: Any, _type: Any) -> Any:
        return schedule(value, _type) if isinstance(value, Mapping) else finite_float(value, float)

    return structure


_CLIENT_KEYS = {f.name for f in attrs.fields(ClientConfig)}
_NAMED_LIBRARY_CLASSES = {*OPTIMIZERS.values(), *SCHEDULES.values()}


def _algorithm(converter: cattrs.Converter):
    """Structure hook for ``[algorithm]``: the name, then the factory's keyword arguments by its signature."""

    def structure(value: Any, _type: Any) -> AlgorithmChoice:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a table with a 'name' key or a bare name, got {type(value).__name__} {value!r}")
        name = checked_name(value.get("name", "fedavg"), ALGORITHMS)
        allowed, types = registry.hyperparameters(name), registry.hyperparameter_types(name)
        params, problems = {}, []
        for key, item in value.items():
            if key == "name":
                continue
            if key not in allowed:  # reported at the table, as cattrs reports unknown keys
                where = "; it belongs in the [client] table" if key in _CLIENT_KEYS else suggest(key, allowed)
                problems.append(ValueError(
                    f"unknown key {key!r} for the algorithm named {name!r}{where} (allowed: {sorted(allowed)})"))
                continue
            try:
                params[key] = converter.structure(item, types[key])
            except Exception as error:  # collected, as cattrs does, so every problem is reported at once
                problems.append(at_key(key, error))
        for key, parameter in allowed.items():
            if key not in value:
                if parameter.default is inspect.Parameter.empty:
                    problems.append(at_key(key, KeyError(key)))
                else:
                    params[key] = parameter.default
        if not problems:
            try:  # the factory's own checks of its values, before any run input is known
                registry.make_algorithm(name, params, population_size=1)
            except registry.AlgorithmBuildError:
                pass  # about run inputs: RunConfig checks those with the whole config
            except ValueError as error:
                problems.append(located(on_its_field(error, params)))
        if problems:
            raise cattrs.ClassValidationError(f"While structuring algorithm {name!r}", problems, AlgorithmChoice)
        return AlgorithmChoice(name, params)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = base_converter(BLOCK_KINDS)
    converter.register_structure_hook_func(lambda t: t is Optimizer, named(converter, OPTIMIZERS, "sgd"))
    converter.register_structure_hook_func(lambda t: t == LearningRate, _learning_rate(converter))
    converter.register_structure_hook_func(lambda t: t == Schedule, named(converter, SCHEDULES, None))
    for name, cls in {**OPTIMIZERS, **SCHEDULES}.items():
        converter.register_unstructure_hook(cls, _named_unstructure(converter, name))
    for kind in (Optimizer, Optional[Optimizer], LearningRate, Schedule):
        converter.register_unstructure_hook_func(
            lambda t, kind=kind: t == kind, lambda value: converter.unstructure(value, type(value))
        )
    converter.register_structure_hook(AlgorithmChoice, _algorithm(converter))
    converter.register_unstructure_hook(AlgorithmChoice, lambda choice: {"name": choice.name, **choice.params})
    return converter


CONVERTER = _make_converter()


def _structure(raw: Mapping[str, Any], source: str) -> RunConfig:
    return structure(CONVERTER, dict(raw), RunConfig, source, _NAMED_LIBRARY_CLASSES).resolved()


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Reads, overrides and validates a TOML experiment config.

    The model's and sampler's file paths (``model.initial_weights``,
    ``sampler.path``) are read from the config file's folder and written in
    absolute, as is a custom model's ``module_dir``, so the run directory's
    copy of the config (``fedsim resume``) finds the same files.
    """
    config = _structure(apply_overrides(read_toml(path), overrides), repr(str(path)))
    folder = Path(path).resolve().parent
    return attrs.evolve(config, model=config.model.relative_to(folder), sampler=config.sampler.relative_to(folder))


def config_from_dict(raw: Mapping[str, Any], overrides: Iterable[str] = ()) -> RunConfig:
    """Validates a config given as a dict (e.g. parsed TOML)."""
    return _structure(apply_overrides(dict(raw), overrides), "(from dict)")


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The fully resolved config (every default filled in) as plain data."""
    return _drop_none(CONVERTER.unstructure(config))


def config_to_toml(config: RunConfig) -> str:
    """The fully resolved config as TOML text."""
    return tomli_w.dumps(config_to_dict(config))


def _drop_none(value: Any) -> Any:
    # TOML has no null: an unset optional is simply absent.
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
