"""Populations in LEAF's JSON format (FEMNIST, Shakespeare, Sent140, CelebA, FedProx synthetic).

A LEAF split is a directory of ``*.json`` shards, each holding::

    {"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}

Each user becomes one client with ``{"x": ..., "y": ...}`` elements. JSON
floats become float32, integers int64 and strings ``tf.string``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.client_data import ClientData
from fedsim.data.errors import ClientDataError


def load_leaf(
    train_dir: str | os.PathLike, test_dir: str | os.PathLike
) -> tuple[ClientData, ClientData]:
    """``(train, test)`` populations read from two LEAF split directories, paired by user.

    Raises ``ClientDataError`` naming the users found in only one of the two.
    """
    train, test = read_leaf_dir(train_dir), read_leaf_dir(test_dir)
    only_train, only_test = sorted(train.keys() - test.keys()), sorted(test.keys() - train.keys())
    if only_train or only_test:
        raise ClientDataError(
            f"train ({train_dir}) and test ({test_dir}) must have the same users; only in train: "
            f"{only_train[:10]}, only in test: {only_test[:10]}; regenerate the split or use "
            "read_leaf_dir on each directory separately"
        )
    return ClientData.from_tensor_slices(train), ClientData.from_tensor_slices(test)


def read_leaf_dir(directory: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """``{user: {"x": array, "y": array}}`` from every ``*.json`` shard in ``directory``."""
    directory = Path(directory).expanduser()
    shards = sorted(directory.glob("*.json"))
    if not shards:
        raise ClientDataError(
            f"no LEAF *.json shards in {directory}; point to e.g. data/femnist/data/train"
        )
    users: dict[str, dict[str, np.ndarray]] = {}
    for shard in shards:
        for user, data in _read_shard(shard).items():
            if user in users:
                raise ClientDataError(
                    f"user {user!r} appears in more than one shard of {directory}, e.g. {shard}"
                )
            users[user] = data
    return users


def _read_shard(shard: Path) -> dict[str, dict[str, np.ndarray]]:
    content = _load_json(shard)
    if not isinstance(content, dict):
        raise ClientDataError(
            f"{shard} is not a LEAF shard: expected a JSON object, got {type(content).__name__}"
        )
    missing = {"users", "num_samples", "user_data"} - content.keys()
    if missing:
        raise ClientDataError(f"{shard} is not a LEAF shard: missing keys {sorted(missing)}")
    user_list, counts, user_data = content["users"], content["num_samples"], content["user_data"]
    if not (
        isinstance(user_list, list) and isinstance(counts, list) and isinstance(user_data, dict)
    ):
        raise ClientDataError(
            f"{shard} is not a LEAF shard: `users` and `num_samples` must be lists and `user_data` "
            f"an object, got {type(user_list).__name__}, {type(counts).__name__} and "
            f"{type(user_data).__name__}"
        )
    if len(user_list) != len(counts):
        raise ClientDataError(f"{shard}: {len(user_list)} users but {len(counts)} num_samples")
    users = {}
    for user, num_samples in zip(user_list, counts):
        if not isinstance(user, str):
            raise ClientDataError(f"{shard}: user {user!r} in `users` is not a string")
        # bool is an int in Python, but `true` is never a count.
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 0:
            raise ClientDataError(
                f"{shard}: user {user!r} has num_samples={num_samples!r}; expected a count >= 0"
            )
        if user not in user_data:
            raise ClientDataError(
                f"{shard}: user {user!r} is listed in `users` but has no `user_data`"
            )
        data = user_data[user]
        if not isinstance(data, dict):
            raise ClientDataError(
                f"{shard}: user {user!r}: `user_data` entry must be an object with 'x' and 'y', "
                f"got {type(data).__name__}"
            )
        arrays = {
            name: _to_array(data.get(name, []), f"{shard}, user {user!r}, {name!r}")
            for name in ("x", "y")
        }
        for name, array in arrays.items():
            if len(array) != num_samples:
                raise ClientDataError(
                    f"{shard}: user {user!r} has num_samples={num_samples} but "
                    f"{len(array)} entries in {name!r}"
                )
        users[user] = arrays
    return users


def _load_json(shard: Path) -> Any:
    try:
        with shard.open(encoding="utf-8") as file:
            return json.load(file)
    except UnicodeDecodeError as error:
        raise ClientDataError(
            f"{shard} is not UTF-8 text ({error}); LEAF writes UTF-8 JSON"
        ) from None
    except json.JSONDecodeError as error:
        raise ClientDataError(
            f"{shard} is not valid JSON ({error}); the file may be truncated, regenerate it"
        ) from None


def _to_array(values: Any, where: str) -> np.ndarray:
    ragged = ClientDataError(
        f"{where}: entries have unequal lengths or mixed nesting; cannot form one array"
    )
    try:
        array = np.asarray(values)
    except ValueError:  # NumPy refuses some ragged nestings outright
        raise ragged from None
    if array.ndim == 0:
        raise ClientDataError(f"{where}: expected a list of examples, got {values!r:.80}")
    if array.dtype == object:
        raise ragged
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.dtype.kind == "U":
        return array
    raise ClientDataError(f"{where}: unsupported JSON values of dtype {array.dtype}")
