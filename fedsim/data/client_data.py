"""The population: client ids and a lazily built ``tf.data.Dataset`` per client."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

DatasetFn = Callable[[str], tf.data.Dataset]
PreprocessFn = Callable[[tf.data.Dataset], tf.data.Dataset]


class ClientDataError(ValueError):
    """Raised for a bad client id or a malformed population."""


class ClientData:
    """A population of clients, each with its own ``tf.data.Dataset``.

    Datasets are built on demand, one client at a time, so a population never
    has to fit in memory. Use the constructors ``from_tensor_slices`` and
    ``from_clients_and_tf_fn``.
    """

    def __init__(
        self,
        client_ids: Sequence[str],
        dataset_fn: DatasetFn,
        preprocess_fns: Sequence[PreprocessFn] = (),
    ):
        ids = [str(c) for c in client_ids]
        if len(set(ids)) != len(ids):
            raise ClientDataError("client ids must be unique; found duplicates")
        self._client_ids = ids
        self._id_set = frozenset(ids)
        self._dataset_fn = dataset_fn
        self._preprocess_fns = tuple(preprocess_fns)

    # Constructors ---------------------------------------------------------
    @classmethod
    def from_tensor_slices(cls, tensor_slices: Mapping[str, Any]) -> "ClientData":
        """Builds a population from ``{client_id: structure of arrays}``.

        Each structure (a tuple ``(x, y)`` or a mapping of named arrays) is cut
        into examples along its first axis, as ``tf.data.Dataset.from_tensor_slices``.
        """
        slices = {str(k): v for k, v in tensor_slices.items()}
        if not slices:
            raise ClientDataError("from_tensor_slices needs at least one client")

        def dataset_fn(client_id: str) -> tf.data.Dataset:
            return tf.data.Dataset.from_tensor_slices(slices[client_id])

        return cls(list(slices), dataset_fn)

    @classmethod
    def from_clients_and_tf_fn(cls, client_ids: Sequence[str], fn: DatasetFn) -> "ClientData":
        """Builds a population whose client datasets come from ``fn(client_id)``."""
        return cls(client_ids, fn)

    # Access ---------------------------------------------------------------
    @property
    def client_ids(self) -> list[str]:
        return list(self._client_ids)

    def __len__(self) -> int:
        return len(self._client_ids)

    def __iter__(self) -> Iterator[tf.data.Dataset]:
        for client_id in self._client_ids:
            yield self.create_tf_dataset_for_client(client_id)

    def create_tf_dataset_for_client(self, client_id: str) -> tf.data.Dataset:
        """The (preprocessed) dataset of one client."""
        client_id = str(client_id)
        if client_id not in self._id_set:
            raise ClientDataError(
                f"unknown client id {client_id!r}; this population has {len(self)} clients, "
                f"e.g. {self._client_ids[:3]}"
            )
        dataset = self._dataset_fn(client_id)
        for fn in self._preprocess_fns:
            dataset = fn(dataset)
        return dataset

    @property
    def element_type_structure(self) -> Any:
        """The ``element_spec`` of every client's dataset."""
        return self.create_tf_dataset_for_client(self._client_ids[0]).element_spec

    def preprocess(self, fn: PreprocessFn) -> "ClientData":
        """A new population whose datasets are ``fn(dataset)``; nothing runs until used."""
        return ClientData(self._client_ids, self._dataset_fn, self._preprocess_fns + (fn,))

    def num_examples(self, client_id: str) -> int:
        """The number of elements in a client's dataset (counted when not known)."""
        dataset = self.create_tf_dataset_for_client(client_id)
        cardinality = int(dataset.cardinality())
        if cardinality >= 0:
            return cardinality
        return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
