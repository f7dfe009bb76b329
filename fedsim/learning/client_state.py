"""Per-client state that persists across rounds, keyed by client id (SCAFFOLD's control variates).

A store maps a client id to a list of NumPy arrays. Like the population's
data, it lives beside the server state rather than in it: a population of a
million clients cannot carry a million states in every checkpoint.

Entries are *versioned by round*: ``put(client, arrays, round_num)`` records
the client's state as of that round, and ``get(client, before_round=r)``
reads the newest version written before round ``r``. A run resumed from the
checkpoint of round ``R`` therefore reads exactly what the uninterrupted run
read, even though the killed run may have written versions for rounds after
``R`` (they are overwritten when those rounds run again). ``prune(round)``
drops the versions no checkpoint at or after ``round`` can need; the run
directory's checkpointer calls it with the oldest checkpoint it keeps.

``NpzClientStore`` keeps one folder per client of ``.npz`` files read with
``allow_pickle=False``; use it when the population does not fit in memory
or the run must resume after a restart.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np

from fedsim.checkpoint import CheckpointWriteError

ClientKey = str | int


class ClientStateWriteError(CheckpointWriteError):
    """A client's state could not be written (e.g. the disk is full); its earlier versions are intact."""


class ClientStore(Protocol):
    """Where per-client state lives between the rounds a client is sampled in."""

    def get(self, client_id: ClientKey, before_round: Optional[int] = None) -> Optional[list[np.ndarray]]:
        """The client's newest arrays written before ``before_round`` (None: the newest), or None."""

    def put(self, client_id: ClientKey, arrays: Sequence[np.ndarray], round_num: int = 0) -> None:
        """Records the client's arrays as of ``round_num`` (replacing that round's version)."""

    def prune(self, up_to_round: int) -> None:
        """Drops versions older than each client's newest version at or before ``up_to_round``."""


def _newest_before(rounds: Sequence[int], before_round: Optional[int]) -> Optional[int]:
    """Index into sorted ``rounds`` of the newest round < ``before_round``, or None."""
    index = len(rounds) if before_round is None else bisect.bisect_left(rounds, before_round)
    return index - 1 if index > 0 else None


def _keep_from(rounds: Sequence[int], up_to_round: int) -> int:
    """Index of the first version to keep: the newest one at or before ``up_to_round``."""
    return max(bisect.bisect_right(rounds, up_to_round) - 1, 0)


class InMemoryClientStore:
    """Client id -> sorted versions of arrays (copies, so callers cannot alias stored state)."""

    def __init__(self) -> None:
        self._versions: dict[ClientKey, tuple[list[int], list[list[np.ndarray]]]] = {}

    def get(self, client_id: ClientKey, before_round: Optional[int] = None) -> Optional[list[np.ndarray]]:
        rounds, values = self._versions.get(client_id, ([], []))
        index = _newest_before(rounds, before_round)
        return None if index is None else [a.copy() for a in values[index]]

    def put(self, client_id: ClientKey, arrays: Sequence[np.ndarray], round_num: int = 0) -> None:
        rounds, values = self._versions.setdefault(client_id, ([], []))
        copy = [np.array(a, copy=True) for a in arrays]
        index = bisect.bisect_left(rounds, round_num)
        if index < len(rounds) and rounds[index] == round_num:
            values[index] = copy
        else:
            rounds.insert(index, round_num)
            values.insert(index, copy)

    def prune(self, up_to_round: int) -> None:
        for rounds, values in self._versions.values():
            start = _keep_from(rounds, up_to_round)
            del rounds[:start], values[:start]

    def __len__(self) -> int:
        return len(self._versions)


class NpzClientStore:
    """One folder per client under ``directory``, one ``r<round>.npz`` per version.

    Folder names are a hash of the id, so any id (slashes, unicode) maps to a
    safe name, spread over 256 subfolders so no folder grows huge; writes go
    to a temporary file renamed into place, so a crash mid-write leaves the
    previous version intact, and a write the disk refuses raises
    ``ClientStateWriteError`` with nothing of it left behind.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _folder(self, client_id: ClientKey) -> Path:
        digest = hashlib.sha256(f"{type(client_id).__name__}:{client_id}".encode("utf-8")).hexdigest()
        return self.directory / digest[:2] / digest[2:34]

    @staticmethod
    def _rounds(folder: Path) -> list[int]:
        if not folder.is_dir():
            return []
        names = (p.name for p in folder.iterdir())
        return sorted(int(n[1:-4]) for n in names if n.startswith("r") and n.endswith(".npz"))

    def get(self, client_id: ClientKey, before_round: Optional[int] = None) -> Optional[list[np.ndarray]]:
        folder = self._folder(client_id)
        rounds = self._rounds(folder)
        index = _newest_before(rounds, before_round)
        if index is None:
            return None
        with np.load(folder / f"r{rounds[index]}.npz", allow_pickle=False) as stored:
            return [stored[f"arr_{i}"] for i in range(len(stored.files))]

    def put(self, client_id: ClientKey, arrays: Sequence[np.ndarray], round_num: int = 0) -> None:
        folder = self._folder(client_id)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"tmp-{os.getpid()}.partial"
        try:
            with open(temporary, "wb") as handle:
                np.savez(handle, *[np.asarray(a) for a in arrays])
            os.replace(temporary, folder / f"r{round_num}.npz")
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a client whose first write failed has no state
            raise self._write_failed(client_id, round_num, error) from error

    def _write_failed(self, client_id: ClientKey, round_num: int, error: OSError) -> ClientStateWriteError:
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            reason += " (the disk is full)"
        return ClientStateWriteError(
            f"could not write client {client_id!r}'s state of round {round_num} to {self.directory}: {reason}; "
            "its earlier state, if any, is intact. Free disk space, then continue the run with "
            f"'fedsim resume {self.directory.parent}'"
        )

    def prune(self, up_to_round: int) -> None:
        for shard in self.directory.iterdir():
            for folder in shard.iterdir() if shard.is_dir() else ():
                rounds = self._rounds(folder)
                for stale in rounds[: _keep_from(rounds, up_to_round)]:
                    (folder / f"r{stale}.npz").unlink()
                # What a writer killed mid-put left; no put runs while its run prunes (one process, one thread).
                for partial in folder.glob("tmp-*.partial"):
                    partial.unlink(missing_ok=True)

    def clear(self) -> None:
        """Removes every client's state (a new run reusing the directory)."""
        shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)

    def __len__(self) -> int:
        return sum(1 for shard in self.directory.iterdir() if shard.is_dir() for _ in shard.iterdir())
