"""Structuring TOML tables into attrs config blocks, strictly, with every problem reported at once.

The converter hooks that know nothing of TensorFlow: scalars that refuse
look-alikes (``"10"`` or ``10.5`` for an int, ``true`` for a number, NaN for
a rate), blocks chosen by ``name`` (or a bare name) from a registry with the
nearest valid name suggested, and the formatting of cattrs' errors as
``key.path: what is wrong``. ``fedsim.experiment.config`` adds the
optimizer and algorithm hooks for a whole ``RunConfig``;
``fedsim.experiment.early`` structures the data, model and sampler blocks
alone, before TensorFlow starts.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Collection, Iterable, Mapping, Optional

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ForbiddenExtraKeysError

from fedsim.experiment.block import Block
from fedsim.experiment.config_source import ConfigError
from fedsim.experiment.validators import FieldError


def suggest(word: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def strict(kind: type, accepts: tuple[type, ...]):
    def structure(value: Any, _type: type) -> Any:
        # bool is an int in Python; a config's true/false is never a number.
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accepts):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return kind(value)

    return structure


def finite_float(value: Any, _type: type) -> float:
    # TOML has inf and nan; no rate, norm or fraction in a config means either.
    number = strict(float, (int, float))(value, _type)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def named(converter: cattrs.Converter, registry: Mapping[str, type], default_name: Optional[str]):
    """Structure hook: a table (or bare name) -> ``registry[name]`` built from the table's other keys."""

    def structure(value: Any, _type: Any) -> Any:
        if isinstance(value, str):  # a bare name (``--set executor=ray``) is the block with its defaults
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise TypeError(
                f"expected a table with a 'name' key or a bare name, got {type(value).__name__} {value!r}"
            )
        name = checked_name(value.get("name", default_name), registry)
        fields = {key: item for key, item in value.items() if key != "name"}
        if issubclass(registry[name], Block):  # config-only blocks carry their name as a field
            fields["name"] = name
            return converter.structure(fields, registry[name])
        try:
            return converter.structure(fields, registry[name])
        except cattrs.ClassValidationError as error:  # a library class's own validators, at their keys
            names = attrs.fields_dict(registry[name])
            placed = [located(on_its_field(e, names)) if isinstance(e, ValueError) else e for e in error.exceptions]
            raise cattrs.ClassValidationError(error.message, placed, error.cl) from None

    return structure


def on_its_field(error: ValueError, fields: Iterable[str]) -> ValueError:
    """A library validator's error on the config key it names.

    The library's validators start their message with ``field=value`` (e.g.
    ``momentum=1.5 must be in [0, 1)``), which puts the error on its key path.
    """
    message = str(error)
    for field in fields:
        if message.startswith(f"{field}="):
            return FieldError(field, message)
    return error


def checked_name(name: Any, registry: Mapping[str, Any]) -> str:
    options = sorted(registry)
    if name is None:
        raise ValueError(f"missing 'name'; choose one of {options}")
    if not isinstance(name, str):
        raise ValueError(f"'name' must be a string, got {type(name).__name__} {name!r}; choose one of {options}")
    if name not in registry:
        raise ValueError(f"unknown name {name!r}{suggest(name, options)} (allowed: {options})")
    return name


def located(error: Exception) -> Exception:
    """A ``FieldError`` as a cattrs problem at its key; any other error stays at the table."""
    return at_key(error.field, ValueError(str(error))) if isinstance(error, FieldError) else error


def at_key(key: str, error: Exception) -> Exception:
    error.__notes__ = [*getattr(error, "__notes__", []), AttributeValidationNote(f"@ {key}", key, Any)]
    return error


def base_converter(block_kinds: Iterable[type]) -> cattrs.Converter:
    """A strict converter for scalars and for each kind of named block in ``block_kinds``."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, strict(int, (int,)))
    converter.register_structure_hook(float, finite_float)
    converter.register_structure_hook(bool, strict(bool, (bool,)))
    converter.register_structure_hook(str, strict(str, (str,)))
    for base in block_kinds:
        # Exact match: the concrete blocks subclass ``base`` and must not loop back here.
        converter.register_structure_hook_func(
            lambda t, base=base: t is base, named(converter, base.registry, base.default_name)
        )
        # Unstructure by the concrete class, not the (fieldless) base.
        converter.register_unstructure_hook_func(
            lambda t, base=base: t is base, lambda block: converter.unstructure(block, type(block))
        )
    return converter


def structure(converter: cattrs.Converter, raw: Any, kind: Any, source: str,
              named_classes: Collection[type] = ()) -> Any:
    """``raw`` structured as ``kind``; a ConfigError lists every problem as ``key.path: message``.

    ``named_classes``: library classes chosen by a ``name`` key that is not one
    of their fields (optimizers, schedules), so ``name`` is listed as allowed.
    """
    try:
        return converter.structure(raw, kind)
    except cattrs.BaseValidationError as error:
        def format_exception(exc: BaseException, _type: Any) -> str:
            return _format(exc, named_classes)

        problems = cattrs.transform_error(error, path="config", format_exception=format_exception)
        lines = "\n  ".join(_tidy(p) for p in problems)
        raise ConfigError(f"invalid config {source}:\n  {lines}") from None


def _format(exc: BaseException, named_classes: Collection[type]) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = [f.name for f in attrs.fields(exc.cl)]
        if exc.cl in named_classes:  # the table's ``name`` chose the class
            allowed = ["name", *allowed]
        return "; ".join(
            f"unknown key {key!r}{suggest(key, allowed)} (allowed: {allowed})"
            for key in sorted(exc.extra_fields)
        )
    if isinstance(exc, KeyError):
        return "missing: this key is required"
    if isinstance(exc, FieldError):
        return f"{exc}{_FIELD_MARK}{exc.field}"
    return str(exc)


_FIELD_MARK = "\x00field="


def _tidy(problem: str) -> str:
    # cattrs says "message @ $.a.b"; we say "a.b: message".
    message, _, path = problem.rpartition(" @ ")
    path = path.removeprefix("config").lstrip(".")
    message, _, field = message.partition(_FIELD_MARK)
    path = ".".join(p for p in (path, field) if p) or "(top level)"
    return f"{path}: {message}"


