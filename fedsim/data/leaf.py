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
    with shard.open(encoding="utf-8") as file:
        content = json.load(file)
    missing = {"users", "num_samples", "user_data"} - content.keys()
    if missing:
        raise ClientDataError(f"{shard} is not a LEAF shard: missing keys {sorted(missing)}")
    if len(content["users"]) != len(content["num_samples"]):
        raise ClientDataError(
            f"{shard}: {len(content['users'])} users but {len(content['num_samples'])} num_samples"
        )
    users = {}
    for user, num_samples in zip(content["users"], content["num_samples"]):
        if user not in content["user_data"]:
            raise ClientDataError(
                f"{shard}: user {user!r} is listed in `users` but has no `user_data`"
            )
        data = content["user_data"][user]
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
        users[str(user)] = arrays
    return users


def _to_array(values: list[Any], where: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == object:
        raise ClientDataError(
            f"{where}: entries have unequal lengths or mixed nesting; cannot form one array"
        )
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.dtype.kind == "U":
        return array
    raise ClientDataError(f"{where}: unsupported JSON values of dtype {array.dtype}")
