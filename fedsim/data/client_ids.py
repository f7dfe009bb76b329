"""Client-id sequences that stay small for populations of millions of clients.

A population's ids are a read-only ``Sequence[str]`` that also maps an id back
to its position (``index``). The implementations store ids as a range, a
sorted byte array or a subset of indices, so that a million clients never
become a million Python strings; sampling a cohort works on positions.
"""

from __future__ import annotations

import abc
from typing import Iterable, Sequence, overload

import numpy as np

from fedsim.data.errors import ClientDataError


class ClientIds(Sequence[str], abc.ABC):
    """An immutable sequence of unique client ids with O(1)/O(log n) ``index``."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _id_at(self, position: int) -> str:
        """The id at a non-negative position known to be in range."""

    @abc.abstractmethod
    def _find(self, client_id: str) -> int:
        """The position of ``client_id``, or -1 when it is not in the population."""

    @overload
    def __getitem__(self, position: int) -> str: ...

    @overload
    def __getitem__(self, position: slice) -> list[str]: ...

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self._id_at(i) for i in range(*position.indices(len(self)))]
        position = int(position)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"client position {position} out of range for {len(self)} clients")
        return self._id_at(position)

    def __contains__(self, client_id: object) -> bool:
        return isinstance(client_id, str) and self._find(client_id) >= 0

    def index(self, client_id: str, start: int = 0, stop: int | None = None) -> int:
        """The position of ``client_id``; raises ``ClientDataError`` if unknown."""
        position = self._find(str(client_id))
        stop = len(self) if stop is None else stop
        if position < 0 or not start <= position < stop:
            raise ClientDataError(
                f"unknown client id {client_id!r}; this population has {len(self)} clients, "
                f"e.g. {self[:3]}. Use one of `client_data.client_ids`."
            )
        return position

    def count(self, client_id: object) -> int:
        return int(client_id in self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} clients, first {self[:3]})"


class ListIds(ClientIds):
    """Ids held as a tuple plus a dict for lookups; for small populations."""

    def __init__(self, client_ids: Iterable[str]):
        self._ids = tuple(str(c) for c in client_ids)
        self._positions = {c: i for i, c in enumerate(self._ids)}
        if len(self._positions) != len(self._ids):
            seen: set[str] = set()
            duplicates = sorted({c for c in self._ids if c in seen or seen.add(c)})
            raise ClientDataError(f"client ids must be unique; duplicated: {duplicates[:5]}")

    def __len__(self) -> int:
        return len(self._ids)

    def _id_at(self, position: int) -> str:
        return self._ids[position]

    def _find(self, client_id: str) -> int:
        return self._positions.get(client_id, -1)


class RangeIds(ClientIds):
    """Ids ``f"{prefix}{i}"`` for ``i`` in ``range(n)``, computed on demand."""

    def __init__(self, num_clients: int, prefix: str = "client_"):
        if num_clients < 0:
            raise ClientDataError(f"num_clients must be >= 0, got {num_clients}")
        self._n = int(num_clients)
        self._prefix = prefix

    def __len__(self) -> int:
        return self._n

    def _id_at(self, position: int) -> str:
        return f"{self._prefix}{position}"

    def _find(self, client_id: str) -> int:
        digits = client_id[len(self._prefix) :]
        # Only the canonical spelling (no sign, no leading zeros) is an id.
        if (
            not client_id.startswith(self._prefix)
            or not digits.isdigit()
            or digits != str(int(digits))
        ):
            return -1
        position = int(digits)
        return position if position < self._n else -1


class SortedArrayIds(ClientIds):
    """Ids held as a sorted NumPy byte array (UTF-8); lookups by binary search.

    About ``max id length`` bytes per client instead of ~60 for a Python string.
    """

    def __init__(self, encoded_ids: np.ndarray):
        encoded_ids = np.asarray(encoded_ids, dtype=np.bytes_)
        if encoded_ids.ndim != 1:
            raise ClientDataError(f"expected a 1-D array of ids, got shape {encoded_ids.shape}")
        if len(encoded_ids) > 1:
            order_ok = encoded_ids[1:] > encoded_ids[:-1]
            if not order_ok.all():
                bad = encoded_ids[1:][~order_ok][0].decode()
                raise ClientDataError(
                    f"ids must be sorted and unique; {bad!r} is out of order or repeated"
                )
        self._ids = encoded_ids

    def __len__(self) -> int:
        return len(self._ids)

    def _id_at(self, position: int) -> str:
        return self._ids[position].decode("utf-8")

    def _find(self, client_id: str) -> int:
        key = client_id.encode("utf-8")
        position = int(np.searchsorted(self._ids, key))
        if position < len(self._ids) and self._ids[position] == key:
            return position
        return -1


class SubsetIds(ClientIds):
    """The ids of ``base`` at the given positions, kept in ``base`` order."""

    def __init__(self, base: ClientIds, positions: np.ndarray):
        self._base = base
        self._positions = np.unique(np.asarray(positions, dtype=np.int64))

    def __len__(self) -> int:
        return len(self._positions)

    def _id_at(self, position: int) -> str:
        return self._base[int(self._positions[position])]

    def _find(self, client_id: str) -> int:
        base_position = self._base._find(client_id)
        position = int(np.searchsorted(self._positions, base_position))
        if (
            base_position >= 0
            and position < len(self._positions)
            and self._positions[position] == base_position
        ):
            return position
        return -1


def as_client_ids(client_ids: Sequence[str]) -> ClientIds:
    """``client_ids`` itself when it is a ``ClientIds``, else a ``ListIds`` copy."""
    if isinstance(client_ids, ClientIds):
        return client_ids
    return ListIds(client_ids)


def sample_positions(num_clients: int, cohort_size: int, rng: np.random.Generator) -> np.ndarray:
    """``cohort_size`` distinct positions in ``range(num_clients)``, sorted.

    ``Generator.choice`` without replacement costs O(cohort_size) for a small
    cohort, so sampling does not grow with the population.
    """
    if not 0 <= cohort_size <= num_clients:
        raise ClientDataError(
            f"cannot sample {cohort_size} clients from a population of {num_clients}; "
            f"choose a cohort size between 0 and {num_clients}"
        )
    return np.sort(rng.choice(num_clients, size=cohort_size, replace=False))
