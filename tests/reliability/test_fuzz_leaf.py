"""Fuzzing the LEAF JSON reader: a damaged shard is a ``ClientDataError`` naming the file.

Each example writes a valid shard, applies one random mutation (a missing or
mistyped key, a wrong ``num_samples``, a ragged or mistyped ``x``, truncated
JSON, non-UTF-8 bytes, ...) and reads the directory. The reader must either
return consistent arrays or raise ``ClientDataError`` whose message names the
shard file, and the user when the damage is inside one user's entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsim.data import ClientDataError
from fedsim.data.leaf import read_leaf_dir

SHARD = "all_data_0_niid_train.json"
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Any JSON value, for replacing a part of a shard with something of the wrong kind.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def shards(draw):
    """A valid shard: 1-3 users with 1-4 examples of ``dim`` float features and an int label."""
    dim = draw(st.integers(1, 3))
    users = draw(
        st.lists(st.text("abcdef0123", min_size=1, max_size=4), min_size=1, max_size=3, unique=True)
    )
    user_data = {}
    for user in users:
        n = draw(st.integers(1, 4))
        x = [[draw(st.floats(-10, 10)) for _ in range(dim)] for _ in range(n)]
        user_data[user] = {"x": x, "y": [draw(st.integers(0, 9)) for _ in range(n)]}
    return {
        "users": users,
        "num_samples": [len(user_data[u]["y"]) for u in users],
        "user_data": user_data,
    }


def _mutate_document(draw, shard: dict) -> str | None:
    """Damages the parsed shard in place; returns the damaged user, if the damage is per user."""
    user = draw(st.sampled_from(shard["users"]))
    index = shard["users"].index(user)
    kind = draw(
        st.sampled_from(
            [
                "drop_top_key",
                "retype_top_key",
                "retype_num_samples_entry",
                "shift_num_samples",
                "drop_user_data",
                "retype_user_data",
                "drop_x_or_y",
                "retype_x_or_y",
                "ragged_x",
                "retype_example",
                "extra_user",
                "short_num_samples",
            ]
        )
    )
    if kind == "drop_top_key":
        del shard[draw(st.sampled_from(["users", "num_samples", "user_data"]))]
    elif kind == "retype_top_key":
        shard[draw(st.sampled_from(["users", "num_samples", "user_data"]))] = draw(json_values)
    elif kind == "retype_num_samples_entry":
        shard["num_samples"][index] = draw(json_values)
        return user
    elif kind == "shift_num_samples":
        shard["num_samples"][index] += draw(st.sampled_from([-1, 1, 5]))
        return user
    elif kind == "drop_user_data":
        del shard["user_data"][user]
        return user
    elif kind == "retype_user_data":
        shard["user_data"][user] = draw(json_values)
        return user
    elif kind == "drop_x_or_y":
        del shard["user_data"][user][draw(st.sampled_from(["x", "y"]))]
        return user
    elif kind == "retype_x_or_y":
        shard["user_data"][user][draw(st.sampled_from(["x", "y"]))] = draw(json_values)
        return user
    elif kind == "ragged_x":
        shard["user_data"][user]["x"][0].append(1.0)
        if len(shard["user_data"][user]["x"]) == 1:  # one example cannot be ragged: add another
            shard["user_data"][user]["x"].append([0.0])
        return user
    elif kind == "retype_example":
        shard["user_data"][user]["x"][0] = draw(json_values)
        return user
    elif kind == "extra_user":
        shard["users"].append(draw(json_values))
        shard["num_samples"].append(1)
    elif kind == "short_num_samples":
        shard["num_samples"].pop()
    return None


def _mutate_bytes(draw, text: bytes) -> bytes:
    if draw(st.booleans()):
        return text[: draw(st.integers(0, len(text) - 1))]  # truncated JSON
    position = draw(st.integers(0, len(text) - 1))
    return text[:position] + b"\xff\xfe" + text[position:]  # not UTF-8


@st.composite
def damaged_shards(draw):
    """``(file bytes, damaged user or None)``."""
    shard = draw(shards())
    if draw(st.integers(0, 3)) == 0:
        return _mutate_bytes(draw, json.dumps(shard).encode()), None
    user = _mutate_document(draw, shard)
    return json.dumps(shard).encode(), user


def _check_consistent(users: dict) -> None:
    for arrays in users.values():
        assert len(arrays["x"]) == len(arrays["y"])
        assert arrays["x"].dtype != object and arrays["y"].dtype != object


@SETTINGS
@given(damaged=damaged_shards())
def test_damaged_shard_reads_consistently_or_names_file_and_user(tmp_path_factory, damaged):
    content, user = damaged
    directory = tmp_path_factory.mktemp("leaf")
    (directory / SHARD).write_bytes(content)
    try:
        users = read_leaf_dir(directory)
    except ClientDataError as error:
        assert SHARD in str(error)
        if user is not None:
            assert f"user {user!r}" in str(error)
    else:
        _check_consistent(users)


@SETTINGS
@given(shard=shards())
def test_valid_shard_reads_back_exactly(tmp_path_factory, shard):
    directory = tmp_path_factory.mktemp("leaf")
    (directory / SHARD).write_text(json.dumps(shard), encoding="utf-8")
    users = read_leaf_dir(directory)
    assert sorted(users) == sorted(shard["users"])
    for user, data in shard["user_data"].items():
        np.testing.assert_array_equal(users[user]["x"], np.float32(data["x"]))
        np.testing.assert_array_equal(users[user]["y"], data["y"])


@pytest.mark.parametrize("content", [b"", b"[]", b"null", b'"users"', b'{"users": '])
def test_shard_that_is_not_a_json_object_names_the_file(tmp_path: Path, content: bytes):
    (tmp_path / SHARD).write_bytes(content)
    with pytest.raises(ClientDataError, match=SHARD):
        read_leaf_dir(tmp_path)
