"""Loading experiment configs: TOML -> validated, frozen ``RunConfig``.

cattrs turns the TOML tables into the attrs classes of :mod:`blocks`; a
strict converter rejects unknown keys (suggesting the nearest valid one),
wrong types (``"10"`` or ``10.5`` for an int), and unknown block names.
Every problem is reported at once as ``key.path: what is wrong``.
"""
from __future__ import annotations

import difflib
import inspect
import math
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import attrs
import cattrs
import tomli_w
from cattrs.errors import AttributeValidationNote, ForbiddenExtraKeysError

from fedsim.algorithms import registry
from fedsim.algorithms.registry import ALGORITHMS
from fedsim.experiment.algorithm_blocks import AlgorithmChoice, ClientConfig
from fedsim.experiment.blocks import BLOCK_KINDS, Block, Optimizer, RunConfig
from fedsim.optimizers import OPTIMIZERS, SCHEDULES
from fedsim.optimizers.schedules import LearningRate, Schedule
from fedsim.experiment.validators import FieldError


class ConfigError(ValueError):
    """A config that cannot be loaded; the message lists every problem with its key path."""


def _suggest(word: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _strict(kind: type, accepts: tuple[type, ...]):
    def structure(value: Any, _type: type) -> Any:
        # bool is an int in Python; a config's true/false is never a number.
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accepts):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return kind(value)

    return structure


def _finite_float(value: Any, _type: type) -> float:
    # TOML has inf and nan; no rate, norm or fraction in a config means either.
    number = _strict(float, (int, float))(value, _type)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _named(converter: cattrs.Converter, registry: Mapping[str, type], default_name: Optional[str]):
    """Structure hook: a table (or bare name) -> ``registry[name]`` built from the table's other keys."""

    def structure(value: Any, _type: Any) -> Any:
        if isinstance(value, str):  # a bare name (``--set executor=ray``) is the block with its defaults
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise TypeError(
                f"expected a table with a 'name' key or a bare name, got {type(value).__name__} {value!r}"
            )
        name = _checked_name(value.get("name", default_name), registry)
        fields = {key: item for key, item in value.items() if key != "name"}
        if issubclass(registry[name], Block):  # config-only blocks carry their name as a field
            fields["name"] = name
            return converter.structure(fields, registry[name])
        try:
            return converter.structure(fields, registry[name])
        except cattrs.ClassValidationError as error:  # a library class's own validators, at their keys
            names = attrs.fields_dict(registry[name])
            located = [_located(_on_its_field(e, names)) if isinstance(e, ValueError) else e for e in error.exceptions]
            raise cattrs.ClassValidationError(error.message, located, error.cl) from None

    return structure


def _on_its_field(error: ValueError, fields: Iterable[str]) -> ValueError:
    """A library validator's error on the config key it names.

    The library's validators start their message with ``field=value`` (e.g.
    ``momentum=1.5 must be in [0, 1)``), which puts the error on its key path.
    """
    message = str(error)
    for field in fields:
        if message.startswith(f"{field}="):
            return FieldError(field, message)
    return error


def _checked_name(name: Any, registry: Mapping[str, Any]) -> str:
    options = sorted(registry)
    if name is None:
        raise ValueError(f"missing 'name'; choose one of {options}")
    if not isinstance(name, str):
        raise ValueError(f"'name' must be a string, got {type(name).__name__} {name!r}; choose one of {options}")
    if name not in registry:
        raise ValueError(f"unknown name {name!r}{_suggest(name, options)} (allowed: {options})")
    return name


def _named_unstructure(converter: cattrs.Converter, name: str):
    """Unstructure hook: a library object -> its table, ``name`` first."""

    def unstructure(value: Any) -> dict[str, Any]:
        return {"name": name, **{f.name: converter.unstructure(getattr(value, f.name)) for f in attrs.fields(type(value))}}

    return unstructure


def _learning_rate(converter: cattrs.Converter):
    schedule = _named(converter, SCHEDULES, None)

    def structure(value: Any, _type: Any) -> Any:
        return schedule(value, _type) if isinstance(value, Mapping) else _finite_float(value, float)

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
        name = _checked_name(value.get("name", "fedavg"), ALGORITHMS)
        allowed, types = registry.hyperparameters(name), registry.hyperparameter_types(name)
        params, problems = {}, []
        for key, item in value.items():
            if key == "name":
                continue
            if key not in allowed:  # reported at the table, as cattrs reports unknown keys
                where = "; it belongs in the [client] table" if key in _CLIENT_KEYS else _suggest(key, allowed)
                problems.append(ValueError(
                    f"unknown key {key!r} for the algorithm named {name!r}{where} (allowed: {sorted(allowed)})"))
                continue
            try:
                params[key] = converter.structure(item, types[key])
            except Exception as error:  # collected, as cattrs does, so every problem is reported at once
                problems.append(_at(key, error))
        for key, parameter in allowed.items():
            if key not in value:
                if parameter.default is inspect.Parameter.empty:
                    problems.append(_at(key, KeyError(key)))
                else:
                    params[key] = parameter.default
        if not problems:
            try:  # the factory's own checks of its values, before any run input is known
                registry.make_algorithm(name, params, population_size=1)
            except registry.AlgorithmBuildError:
                pass  # about run inputs: RunConfig checks those with the whole config
            except ValueError as error:
                problems.append(_located(_on_its_field(error, params)))
        if problems:
            raise cattrs.ClassValidationError(f"While structuring algorithm {name!r}", problems, AlgorithmChoice)
        return AlgorithmChoice(name, params)

    return structure


def _located(error: Exception) -> Exception:
    """A ``FieldError`` as a cattrs problem at its key; any other error stays at the table."""
    return _at(error.field, ValueError(str(error))) if isinstance(error, FieldError) else error


def _at(key: str, error: Exception) -> Exception:
    error.__notes__ = [*getattr(error, "__notes__", []), AttributeValidationNote(f"@ {key}", key, Any)]
    return error


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict(int, (int,)))
    converter.register_structure_hook(float, _finite_float)
    converter.register_structure_hook(bool, _strict(bool, (bool,)))
    converter.register_structure_hook(str, _strict(str, (str,)))
    for base in BLOCK_KINDS:
        # Exact match: the concrete blocks subclass ``base`` and must not loop back here.
        converter.register_structure_hook_func(
            lambda t, base=base: t is base, _named(converter, base.registry, base.default_name)
        )
        # Unstructure by the concrete class, not the (fieldless) base.
        converter.register_unstructure_hook_func(
            lambda t, base=base: t is base, lambda block: converter.unstructure(block, type(block))
        )
    converter.register_structure_hook_func(lambda t: t is Optimizer, _named(converter, OPTIMIZERS, "sgd"))
    converter.register_structure_hook_func(lambda t: t == LearningRate, _learning_rate(converter))
    converter.register_structure_hook_func(lambda t: t == Schedule, _named(converter, SCHEDULES, None))
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


def _format(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = [f.name for f in attrs.fields(exc.cl)]
        if exc.cl in _NAMED_LIBRARY_CLASSES:  # the table's ``name`` chose the class
            allowed = ["name", *allowed]
        return "; ".join(
            f"unknown key {key!r}{_suggest(key, allowed)} (allowed: {allowed})"
            for key in sorted(exc.extra_fields)
        )
    if isinstance(exc, KeyError):
        return "missing: this key is required"
    if isinstance(exc, FieldError):
        return f"{exc}{_FIELD_MARK}{exc.field}"
    return str(exc)


_FIELD_MARK = "\x00field="


def _structure(raw: Mapping[str, Any], source: str) -> RunConfig:
    try:
        return CONVERTER.structure(dict(raw), RunConfig).resolved()
    except cattrs.BaseValidationError as error:
        problems = cattrs.transform_error(error, path="config", format_exception=_format)
        lines = "\n  ".join(_tidy(p) for p in problems)
        raise ConfigError(f"invalid config {source}:\n  {lines}") from None


def _tidy(problem: str) -> str:
    # cattrs says "message @ $.a.b"; we say "a.b: message".
    message, _, path = problem.rpartition(" @ ")
    path = path.removeprefix("config").lstrip(".")
    message, _, field = message.partition(_FIELD_MARK)
    path = ".".join(p for p in (path, field) if p) or "(top level)"
    return f"{path}: {message}"


def parse_override(override: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value), the value read as a TOML literal (or a bare string)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected key.path=value, e.g. --set rounds=5")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # e.g. --set model.name=mlp
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key.path=value`` set (tables created as needed)."""
    result = _deep_copy(raw)
    for override in overrides:
        path, value = parse_override(override)
        table = result
        for key in path[:-1]:
            if isinstance(table.get(key), str):  # a bare name (``algorithm=fedprox``) gains keys
                table[key] = {"name": table[key]}
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {override!r}: {key!r} is not a table")
        table[path[-1]] = value
    return result


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw TOML document, with a ConfigError naming the file and line on failure."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {str(path)!r} is a directory; give a .toml file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None


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
