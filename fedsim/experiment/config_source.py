"""A config's raw TOML document, with ``--set key.path=value`` overrides applied.

No schema here and no TensorFlow: ``fedsim.experiment.config`` validates the
result, and ``fedsim.experiment.early`` reads it before TensorFlow starts.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Iterable


class ConfigError(ValueError):
    """A config that cannot be loaded; the message lists every problem with its key path."""


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


