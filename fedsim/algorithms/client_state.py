"""Per-client state that persists across rounds, keyed by client id (SCAFFOLD's control variates).

A store maps a client id to a list of NumPy arrays. Like the population's
data, it lives beside the server state rather than in it: a population of a
million clients cannot carry a million states in every checkpoint. Use
``NpzClientStore`` (one ``.npz`` per client, loaded without pickle) when the
population does not fit in memory or the run must resume after a restart.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

ClientKey = str | int


class ClientStore(Protocol):
    """Where per-client state lives between the rounds a client is sampled in."""

    def get(self, client_id: ClientKey) -> Optional[list[np.ndarray]]:
        """The client's arrays, or None if it has none yet."""

    def put(self, client_id: ClientKey, arrays: Sequence[np.ndarray]) -> None:
        """Stores (replaces) the client's arrays."""


class InMemoryClientStore:
    """A dict from client id to arrays (copies, so callers cannot alias stored state)."""

    def __init__(self) -> None:
        self._arrays: dict[ClientKey, list[np.ndarray]] = {}

    def get(self, client_id: ClientKey) -> Optional[list[np.ndarray]]:
        stored = self._arrays.get(client_id)
        return None if stored is None else [a.copy() for a in stored]

    def put(self, client_id: ClientKey, arrays: Sequence[np.ndarray]) -> None:
        self._arrays[client_id] = [np.array(a, copy=True) for a in arrays]

    def __len__(self) -> int:
        return len(self._arrays)


class NpzClientStore:
    """One ``.npz`` file per client under ``directory``, read with ``allow_pickle=False``.

    File names are a hash of the id, so any id (slashes, unicode) maps to a safe
    name; writes go to a temporary file renamed into place, so a crash mid-write
    leaves the previous state intact.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, client_id: ClientKey) -> Path:
        digest = hashlib.sha256(
            f"{type(client_id).__name__}:{client_id}".encode("utf-8")
        ).hexdigest()
        return self.directory / f"{digest[:32]}.npz"

    def get(self, client_id: ClientKey) -> Optional[list[np.ndarray]]:
        path = self._path(client_id)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return [stored[f"arr_{i}"] for i in range(len(stored.files))]

    def put(self, client_id: ClientKey, arrays: Sequence[np.ndarray]) -> None:
        path = self._path(client_id)
        temporary = path.with_suffix(".tmp.npz")
        np.savez(temporary, *[np.asarray(a) for a in arrays])
        os.replace(temporary, path)

    def __len__(self) -> int:
        return sum(1 for path in self.directory.glob("*.npz") if not path.name.endswith(".tmp.npz"))
