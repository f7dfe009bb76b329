"""Fuzzing checkpoints: random nests round-trip exactly; damaged files are a ``CheckpointError``.

Damage is applied three ways: bytes of ``arrays.npz`` or ``state.json``
flipped or cut off (the SHA-256 and the JSON parser catch most of it); bytes
of ``arrays.npz`` damaged with the SHA-256 in ``state.json`` updated to match,
so the npz reader itself meets the damage; and nodes of the parsed
``state.json`` replaced by random JSON values. Loading must raise
``CheckpointError`` or return a state with the template's exact structure.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedsim.checkpoint import CheckpointError, flatten, load_checkpoint, save_checkpoint

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DTYPES = st.sampled_from(
    ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool", "complex64"]
)
ARRAYS = DTYPES.flatmap(
    lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
    )
)
LEAVES = (
    ARRAYS
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text(max_size=5)
    | ARRAYS.filter(lambda a: a.ndim == 0).map(lambda a: a[()])  # NumPy scalars
)
NESTS = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3)
    | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2)
    | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)


def _template(nest):
    """The same structure with every value zeroed, so restored values must come from disk."""
    if isinstance(nest, dict):
        return {key: _template(value) for key, value in nest.items()}
    if isinstance(nest, (list, tuple)):
        return type(nest)(_template(value) for value in nest)
    if nest is None or isinstance(nest, str):
        return nest
    if isinstance(nest, np.ndarray):
        return np.zeros_like(nest)
    return type(nest)(0)


def _assert_identical(restored, original) -> None:
    assert type(restored) is type(original)
    if isinstance(original, dict):
        assert list(restored) == list(original)
        for key in original:
            _assert_identical(restored[key], original[key])
    elif isinstance(original, (list, tuple)):
        assert len(restored) == len(original)
        for r, o in zip(restored, original):
            _assert_identical(r, o)
    elif isinstance(original, (np.ndarray, np.generic)):
        assert restored.dtype == original.dtype and restored.shape == original.shape
        assert restored.tobytes() == original.tobytes()  # bit for bit, NaNs included
    elif isinstance(original, float):
        assert np.float64(restored).tobytes() == np.float64(original).tobytes()
    else:
        assert restored == original


@SETTINGS
@given(nest=NESTS, round_num=st.integers(0, 10**6))
def test_random_nests_round_trip_exactly(tmp_path_factory, nest, round_num):
    directory = tmp_path_factory.mktemp("ckpt")
    path = save_checkpoint(directory, round_num, nest, meta={"note": "fuzz"})
    restored = load_checkpoint(path, _template(nest))
    assert restored.round_num == round_num and restored.meta == {"note": "fuzz"}
    _assert_identical(restored.state, nest)


STATE = {
    "round_num": 3,
    "model_weights": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)],
    "optimizer": {"step": np.int64(7), "moments": (np.zeros(2), None), "name": "adam"},
    "weighted": True,
}


def _saved(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), 3, STATE)


def _load_or_checkpoint_error(path: Path) -> None:
    try:
        restored = load_checkpoint(path, _template(STATE))
    except CheckpointError as error:
        assert str(path) in str(error)
    else:
        assert flatten(restored.state)[1] == flatten(STATE)[1]


@st.composite
def byte_damage(draw, content: bytes) -> bytes:
    content = bytearray(content)
    if draw(st.booleans()):
        return bytes(content[: draw(st.integers(0, len(content) - 1))])
    for position in draw(st.lists(st.integers(0, len(content) - 1), min_size=1, max_size=4)):
        content[position] ^= draw(st.integers(1, 255))
    return bytes(content)


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["arrays.npz", "state.json"]))
def test_damaged_bytes_are_a_checkpoint_error(tmp_path_factory, data, name):
    path = _saved(tmp_path_factory)
    target = path / name
    target.write_bytes(data.draw(byte_damage(target.read_bytes())))
    _load_or_checkpoint_error(path)


@SETTINGS
@given(data=st.data())
def test_damaged_npz_with_a_matching_hash_is_a_checkpoint_error(tmp_path_factory, data):
    path = _saved(tmp_path_factory)
    arrays = path / "arrays.npz"
    arrays.write_bytes(data.draw(byte_damage(arrays.read_bytes())))
    document = json.loads((path / "state.json").read_text())
    document["arrays_sha256"] = hashlib.sha256(arrays.read_bytes()).hexdigest()
    (path / "state.json").write_text(json.dumps(document))
    _load_or_checkpoint_error(path)


def _nodes(value):
    """Every ``(container, key)`` inside a parsed JSON document."""
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value) if isinstance(value, list) else ()
    )
    found = []
    for key, child in items:
        found.append((value, key))
        found += _nodes(child)
    return found


@SETTINGS
@given(data=st.data())
def test_damaged_state_json_structure_is_a_checkpoint_error(tmp_path_factory, data):
    path = _saved(tmp_path_factory)
    document = json.loads((path / "state.json").read_text())
    container, key = data.draw(st.sampled_from(_nodes(document)))
    if data.draw(st.booleans()):
        container[key] = data.draw(JSON_VALUES)
    elif isinstance(container, dict):
        del container[key]
    else:
        container.pop(key)
    (path / "state.json").write_text(json.dumps(document))
    _load_or_checkpoint_error(path)


def test_a_missing_checkpoint_directory_is_a_checkpoint_error(tmp_path: Path):
    shutil.rmtree(tmp_path)
    with pytest.raises(CheckpointError, match="state.json is missing"):
        load_checkpoint(tmp_path, _template(STATE))
