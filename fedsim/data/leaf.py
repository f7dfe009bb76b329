"""Populations in LEAF's JSON format (FEMNIST, Shakespeare, Sent140, CelebA, FedProx synthetic).

A LEAF split is a directory of ``*.json`` shards (or one such file), each holding::

    {"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}

Each user listed in ``users`` becomes one client with ``{"x": ..., "y": ...}``
elements; clients come sorted by id, whatever the shard order, so a seed draws
the same writers as tools that sort ids (LEAF's own, TensorFlow Federated's).
JSON floats become float32, integers int64 and strings ``tf.string``; labels
written as floats must be whole numbers and become int64. Features written as
integers become float32 when other users' are floats (JSON does not tell 1 from
1.0), and a user with no samples gets the feature shape of the others (``[]``
has none), so both splits' examples share one element spec.

The train and test splits are read independently: LEAF's split by user gives
them different writers (e.g. FEMNIST: 105 train writers, 184 test writers), and
a split by sample gives them the same ones.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from fedsim.data.errors import ClientDataError
from fedsim.data.labels import LabelError, whole_labels

if TYPE_CHECKING:  # imported in load_leaf: the shard readers stay free of TensorFlow
    from fedsim.data.client_data import ClientData

#: The older name of :class:`fedsim.data.labels.LabelError`, raised for a LEAF label that is not a whole number.
LeafLabelError = LabelError

Users = dict[str, dict[str, np.ndarray]]


def load_leaf(
    train_path: str | os.PathLike, test_path: str | os.PathLike
) -> tuple[ClientData, ClientData]:
    """``(train, test)`` populations of two LEAF splits, each a directory of shards or one ``.json``.

    The splits may hold different writers (LEAF's split by user does):
    every test writer is a test client, every train writer a train client.
    A test split whose users all have no samples is allowed (its evaluation
    counts no examples); a train split without samples is refused.
    """
    # Imported here: the shard readers below need no TensorFlow, and a config's
    # early checks (fedsim.experiment.early) count a split's users before it starts.
    from fedsim.data.client_data import ClientData

    train, test = _read_users(train_path), _read_users(test_path)
    if not any(len(arrays["y"]) for arrays in train.values()):
        raise ClientDataError(
            f"no user of the LEAF train split {str(train_path)!r} has a sample; a model needs "
            "examples to train on: point to the split LEAF's preprocess.sh wrote"
        )
    _conform(train, test)
    return ClientData.from_tensor_slices(train), ClientData.from_tensor_slices(test)


def leaf_shards(path: str | os.PathLike) -> list[Path]:
    """The shard files of a split: ``path`` itself if it is a file, else its ``*.json`` files, sorted.

    Raises ``ClientDataError`` when ``path`` does not exist, holds no shard,
    or holds a ``*.json`` entry that is not a file (e.g. a directory ``s.json``).
    """
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ClientDataError(
            f"LEAF split {str(path)!r} does not exist; give a directory of *.json shards or one "
            "*.json file, e.g. data/femnist/data/train as LEAF's preprocess.sh writes it"
        )
    shards = sorted(path.glob("*.json"))
    if not shards:
        raise ClientDataError(
            f"no LEAF *.json shards in {str(path)!r}; point to e.g. data/femnist/data/train"
        )
    # Skipping it would silently drop whatever the user meant it to hold.
    folder = next((shard for shard in shards if not shard.is_file()), None)
    if folder is not None:
        raise ClientDataError(
            f"{folder} is a directory (or another non-file), not a LEAF shard; every *.json entry of "
            f"{str(path)!r} must be a shard file: move or rename it"
        )
    return shards


def read_leaf_split(path: str | os.PathLike) -> Users:
    """``{user: {"x": array, "y": array}}`` from a split (a directory of shards or one file), sorted by user."""
    return _conform(_read_users(path))[0]


def _read_users(path: str | os.PathLike) -> Users:
    users: Users = {}
    for shard in leaf_shards(path):
        for user, data in _read_shard(shard).items():
            if user in users:
                raise ClientDataError(
                    f"user {user!r} appears in more than one shard of {str(path)!r}, e.g. {shard}"
                )
            users[user] = data
    return {user: users[user] for user in sorted(users)}


def _conform(*splits: Users) -> tuple[Users, ...]:
    """Gives every user's arrays the dtype and example shape the users with samples agree on.

    JSON loses both for some users: ``[]`` has no shape, and ``[1, 2]`` reads
    as integers where another user's ``[1.5, 2]`` reads as floats. Users with
    samples whose shapes still differ are left for ``ClientData`` to name.
    """
    filled = [arrays for users in splits for arrays in users.values() if len(arrays["y"])]
    if not filled:
        return splits
    for name in ("x", "y"):
        template = filled[0][name]
        if any(arrays[name].dtype.kind == "f" for arrays in filled) and template.dtype.kind in "iub":
            template = template.astype(np.float32)
        for users in splits:
            for arrays in users.values():
                array = arrays[name]
                if not len(array):
                    arrays[name] = np.zeros((0,) + template.shape[1:], template.dtype)
                elif array.dtype.kind in "iub" and template.dtype.kind == "f":
                    arrays[name] = array.astype(template.dtype)
    return splits


#: The older name of :func:`read_leaf_split`, which also reads a single ``.json`` file.
read_leaf_dir = read_leaf_split


def count_leaf_users(path: str | os.PathLike, max_chars: int = 1 << 24) -> Optional[int]:
    """The number of users of a split, read from each shard's leading ``users`` list only.

    LEAF writes ``users`` as the first key, so this reads a few kilobytes per
    shard instead of parsing megabytes of pixels. ``None`` when a shard does
    not start with its ``users`` list (the count then needs the full read).
    Raises ``ClientDataError`` when the split does not exist.
    """
    total = 0
    for shard in leaf_shards(path):
        users = _leading_users(shard, max_chars)
        if users is None:
            return None
        total += len(users)
    return total


_USERS_FIRST = re.compile(r'\s*\{\s*"users"\s*:\s*')


def _leading_users(shard: Path, max_chars: int) -> Optional[list]:
    decoder = json.JSONDecoder()
    text, size = "", 1 << 12
    try:
        with shard.open(encoding="utf-8") as file:
            while len(text) < max_chars:
                chunk = file.read(size)
                text += chunk
                opening = _USERS_FIRST.match(text)
                if opening is None:
                    if len(text.strip()) > 16 or not chunk:
                        return None  # another key comes first: only the full read can count
                else:
                    try:
                        users, _ = decoder.raw_decode(text, opening.end())
                        return users if isinstance(users, list) else None
                    except json.JSONDecodeError:
                        if not chunk:
                            return None
                size *= 2  # doubling keeps the re-parsing linear overall
    except (OSError, UnicodeDecodeError):
        return None  # the full read reports what is wrong with the file
    return None


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
        if user in users:
            raise ClientDataError(f"{shard}: user {user!r} is listed twice in `users`; list each user once")
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
        arrays["y"] = whole_labels(arrays["y"], f"{shard}, user {user!r}")
        for name, array in arrays.items():
            if len(array) != num_samples:
                raise ClientDataError(
                    f"{shard}: user {user!r} has num_samples={num_samples} but "
                    f"{len(array)} entries in {name!r}"
                )
        users[user] = arrays
    unlisted = sorted(set(user_data) - set(users))
    if unlisted:  # its examples would be dropped without a word
        raise ClientDataError(
            f"{shard}: user {unlisted[0]!r} has `user_data` but is not in `users`"
            + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
            + "; list every user in `users` with its num_samples, or remove their data"
        )
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
    except RecursionError:
        raise ClientDataError(
            f"{shard} nests JSON lists or objects deeper than the reader allows; a LEAF shard nests a "
            "few levels (user_data, user, x, example): the file is not a LEAF shard, regenerate it"
        ) from None
    except OSError as error:  # unreadable: permissions, or removed since it was listed
        raise ClientDataError(f"cannot read LEAF shard {shard}: {error.strerror or error}") from None


def _to_array(values: Any, where: str) -> np.ndarray:
    ragged = ClientDataError(
        f"{where}: entries have unequal lengths or mixed nesting (or an integer beyond 64 bits); "
        "cannot form one array"
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
