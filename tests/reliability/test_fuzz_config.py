"""Fuzzing the config loader.

Valid documents are drawn from the schema itself (every registered block and
every field of ``fedsim.experiment.blocks``, read from the attrs classes; every
optimizer and schedule of ``fedsim.optimizers``, read from the library's
classes; algorithm hyperparameters read from the factories' signatures), so a
block added later is fuzzed without touching this file. Valid documents draw
the algorithms that take any client optimizer and weighting (the cross-block
refusals, such as momentum for FedNova, are ``test_config_errors``'s).
Properties:

- a valid document loads, and ``config_to_toml`` -> ``load_config`` gives an
  equal ``RunConfig`` (and the same TOML again);
- one random damage (a value of another type or out of range, a deleted key,
  an unknown key, an unknown block name) either still loads and round-trips,
  or raises ``ConfigError`` with a line for the damaged key path;
- random bytes, and random ``--set`` overrides, raise nothing but ``ConfigError``.
"""

from __future__ import annotations

import copy
import math
import re
import typing
from pathlib import Path
from typing import Any

import attrs
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedsim.algorithms.registry import ALGORITHMS as ALGORITHM_NAMES

from fedsim.algorithms.registry import hyperparameter_types, hyperparameters, takes
from fedsim.experiment.block import Block
from fedsim.experiment.blocks import Optimizer, RunConfig
from fedsim.optimizers import OPTIMIZERS, SCHEDULES
from fedsim.optimizers.schedules import LearningRate, Schedule
from fedsim.experiment.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
)

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Numbers that satisfy every validator at once (positive, non-negative, in [0, 1)).
VALID_INT = st.integers(1, 10_000)
VALID_FLOAT = st.floats(0.001, 0.999)
TOML_SCALARS = (
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.text(max_size=6)
)
# Any TOML value, including ones no field accepts.
TOML_VALUES = st.recursive(
    TOML_SCALARS | st.just(math.nan),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
AGGREGATOR_CHAINS = st.sampled_from(
    [
        [],
        [{"name": "mean", "weighted": False}],
        [{"name": "clipping", "clip_norm": 1.0}, {"name": "median"}],
        [{"name": "zeroing", "norm_bound": 10.0}, {"name": "trimmed_mean", "beta": 0.1}],
    ]
).map(
    copy.deepcopy
)  # tests damage documents in place; never the shared originals


def named_tables(registry: dict) -> st.SearchStrategy:
    """A table choosing one of a library registry's classes by ``name``, with its fields."""
    return st.one_of([tables(cls).map(lambda t, name=name: {"name": name, **t}) for name, cls in registry.items()])


@st.composite
def algorithm_tables(draw):
    """An ``[algorithm]`` table: a registered name and values for its hyperparameters."""
    usable = [n for n in sorted(ALGORITHM_NAMES) if takes(n, "client_optimizer") and takes(n, "weighted")]
    name = draw(st.sampled_from(usable))
    table = {"name": name}
    for key, parameter in hyperparameters(name).items():
        if parameter.default is parameter.empty or draw(st.booleans()):
            table[key] = draw(for_type(hyperparameter_types(name)[key]))
    return table


SPECIAL_FIELDS = {
    "function": st.sampled_from(["my_models:build", "lab.models.cnn:make_model"]),
    "aggregator": AGGREGATOR_CHAINS,
    "algorithm": st.deferred(algorithm_tables),
}
# Schedules nest one level (warm-up, then another schedule), which keeps documents small.
PLAIN_SCHEDULES = {name: cls for name, cls in SCHEDULES.items() if name != "warmup_then_decay"}


def for_type(hint: Any) -> st.SearchStrategy:
    """Valid TOML values for a field of type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return VALID_INT
    if hint is float:
        return VALID_FLOAT
    if hint is str:
        return st.text(max_size=12)
    if hint is Optimizer:
        return named_tables(OPTIMIZERS)
    if hint == LearningRate:
        return VALID_FLOAT | named_tables(SCHEDULES)
    if hint == Schedule:
        return named_tables(PLAIN_SCHEDULES)
    if origin is typing.Union:  # Optional[X]: None leaves the key out
        (inner,) = [a for a in args if a is not type(None)]
        return st.none() | for_type(inner)
    if origin is list:
        return st.lists(for_type(args[0]), min_size=1, max_size=3)
    if origin is dict:
        return st.dictionaries(st.text("abcxyz_", min_size=1, max_size=6), TOML_SCALARS, max_size=3)
    if isinstance(hint, type) and issubclass(hint, Block):
        return st.one_of([tables(cls) for cls in hint.registry.values()])
    if attrs.has(hint):
        return tables(hint)
    raise TypeError(f"no strategy for config field type {hint!r}; extend for_type")


def tables(cls: type) -> st.SearchStrategy:
    """A TOML table for attrs class ``cls``: required fields always, optional ones sometimes."""
    hints = typing.get_type_hints(cls)

    @st.composite
    def build(draw):
        table = {}
        for field in attrs.fields(cls):
            required = field.default is attrs.NOTHING
            if field.name == "name":
                table["name"] = field.default
            elif hints[field.name] is str and not required:
                # A string with a default is often a choice (e.g. "drop" or "raise") whose
                # validator cannot be read back; its default is valid, free text may not be.
                table[field.name] = field.default
            elif required or draw(st.booleans()):
                special = SPECIAL_FIELDS.get(field.name)
                value = draw(special if special is not None else for_type(hints[field.name]))
                if value is not None:
                    table[field.name] = value
        return table

    return build()


valid_documents = tables(RunConfig)


def _write(tmp_path_factory, text: str) -> Path:
    path = tmp_path_factory.mktemp("config") / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _assert_round_trips(config: RunConfig, tmp_path_factory) -> None:
    # A config read from a file has its model's and sampler's relative paths read from the
    # file's folder, written in absolute (load_config): from there the round trip is exact.
    config = load_config(_write(tmp_path_factory, config_to_toml(config)))
    text = config_to_toml(config)
    reloaded = load_config(_write(tmp_path_factory, text))
    assert reloaded == config
    assert config_to_toml(reloaded) == text


@SETTINGS
@given(document=valid_documents)
def test_valid_documents_load_and_round_trip(tmp_path_factory, document):
    _assert_round_trips(config_from_dict(document), tmp_path_factory)


def _tables_and_keys(document: dict, prefix: str = "") -> list[tuple[str, dict, str]]:
    """Every ``(path of the table, table, key)`` in a document, aggregator steps included."""
    found = []
    for key, value in document.items():
        found.append((prefix, document, key))
        path = f"{prefix}.{key}".lstrip(".")
        if isinstance(value, dict):
            found += _tables_and_keys(value, path)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                found += _tables_and_keys(item, f"{path}[{index}]")
    return found


@st.composite
def damaged_documents(draw):
    """``(document, path of the table damaged, key damaged)``."""
    document = draw(valid_documents)
    where, table, key = draw(st.sampled_from(_tables_and_keys(document)))
    kind = draw(st.sampled_from(["retype", "delete", "unknown_key", "rename_block"]))
    if kind == "retype":
        table[key] = draw(TOML_VALUES)
    elif kind == "delete":
        del table[key]
    elif kind == "unknown_key":
        key = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in table))
        table[key] = draw(TOML_SCALARS)
    else:
        assume("name" in table)
        key, table["name"] = "name", draw(st.text(max_size=8))
    return document, where, key


def _names_the_path(message: str, where: str, key: str) -> bool:
    """Whether one problem line of ``message`` is about ``key`` of the table at ``where``."""
    full = f"{where}.{key}".lstrip(".")
    parent = where or "(top level)"
    step = re.fullmatch(r"aggregator\[(\d+)\]", where)
    for line in message.splitlines()[1:]:
        path, _, problem = line.strip().partition(": ")
        # A bad value is reported at its own path, or below it (e.g. model.hidden[0]).
        if path == full or path.startswith((f"{full}.", f"{full}[")):
            return True
        # An unknown key or block name is reported at the table that holds it.
        if path == parent and (repr(key) in problem or key == "name" and "name" in problem):
            return True
        # The aggregator factory checks the chain as a whole and says which step.
        if step and path == "aggregator" and f"step {step.group(1)} " in problem:
            return True
    return False


@SETTINGS
@given(damaged=damaged_documents())
def test_damaged_documents_fail_with_the_key_path(tmp_path_factory, damaged):
    document, where, key = damaged
    try:
        config = config_from_dict(document)
    except ConfigError as error:
        assert _names_the_path(str(error), where, key), (f"{where}.{key}", str(error))
    else:
        assert all(math.isfinite(x) for x in _floats(config_to_dict(config)))
        _assert_round_trips(config, tmp_path_factory)


def _floats(value: Any) -> list[float]:
    """Every float of a resolved config but a custom model's free-form ``params``."""
    if isinstance(value, dict):
        return [x for key, item in value.items() if key != "params" for x in _floats(item)]
    if isinstance(value, list):
        return [x for item in value for x in _floats(item)]
    return [value] if isinstance(value, float) else []


@SETTINGS
@given(content=st.binary(max_size=200))
def test_random_bytes_load_or_are_a_config_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("config") / "run.toml"
    path.write_bytes(content)
    try:
        config = load_config(path)
    except ConfigError:
        return
    _assert_round_trips(config, tmp_path_factory)


@SETTINGS
@given(
    document=valid_documents,
    overrides=st.lists(
        st.text(max_size=20)
        | st.builds("{}={}".format, st.text(max_size=10), st.text(max_size=10)),
        max_size=3,
    ),
)
def test_random_overrides_load_or_are_a_config_error(tmp_path_factory, document, overrides):
    path = _write(tmp_path_factory, tomli_w.dumps(document))
    try:
        config = load_config(path, overrides)
    except ConfigError:
        return
    _assert_round_trips(config, tmp_path_factory)
