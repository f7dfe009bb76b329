"""Loading experiment configs: TOML -> validated, frozen ``RunConfig``.

cattrs turns the TOML tables into the attrs classes of :mod:`blocks`; a
strict converter rejects unknown keys (suggesting the nearest valid one),
wrong types (``"10"`` or ``10.5`` for an int), and unknown block names.
Every problem is reported at once as ``key.path: what is wrong``.
"""
from __future__ import annotations

import difflib
import math
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs
import cattrs
import tomli_w
from cattrs.errors import ForbiddenExtraKeysError

from fedsim.experiment.blocks import BLOCK_KINDS, Block, RunConfig
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


def _named_block(converter: cattrs.Converter, base: type):
    def structure(value: Any, _type: type) -> Block:
        if isinstance(value, str):  # a bare name (``--set executor=ray``) is the block with its defaults
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise TypeError(
                f"expected a table with a 'name' key or a bare name, got {type(value).__name__} {value!r}"
            )
        name = value.get("name", base.default_name)
        options = sorted(base.registry)
        if name is None:
            raise ValueError(f"missing 'name'; choose one of {options}")
        if not isinstance(name, str):
            raise ValueError(
                f"'name' must be a string, got {type(name).__name__} {name!r}; choose one of {options}"
            )
        if name not in base.registry:
            raise ValueError(f"unknown name {name!r}{_suggest(str(name), options)} (allowed: {options})")
        return converter.structure({**value, "name": name}, base.registry[name])

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict(int, (int,)))
    converter.register_structure_hook(float, _finite_float)
    converter.register_structure_hook(bool, _strict(bool, (bool,)))
    converter.register_structure_hook(str, _strict(str, (str,)))
    for base in BLOCK_KINDS:
        # Exact match: the concrete blocks subclass ``base`` and must not loop back here.
        converter.register_structure_hook_func(
            lambda t, base=base: t is base, _named_block(converter, base)
        )
        # Unstructure by the concrete class, not the (fieldless) base.
        converter.register_unstructure_hook_func(
            lambda t, base=base: t is base, lambda block: converter.unstructure(block, type(block))
        )
    return converter


CONVERTER = _make_converter()


def _format(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = [f.name for f in attrs.fields(exc.cl)]
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
        return CONVERTER.structure(dict(raw), RunConfig)
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
    """Reads, overrides and validates a TOML experiment config."""
    return _structure(apply_overrides(read_toml(path), overrides), repr(str(path)))


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
