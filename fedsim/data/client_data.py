"""The population: client ids and a lazily built ``tf.data.Dataset`` per client."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from fedsim.data.array_dataset import ArrayDataset
from fedsim.data.client_ids import ClientIds, as_client_ids, sample_positions
from fedsim.data.errors import ClientDataError

if TYPE_CHECKING:
    from fedsim.data.sources import ClientSource

DatasetFn = Callable[[str], tf.data.Dataset]
PreprocessFn = Callable[[tf.data.Dataset], tf.data.Dataset]
NumExamplesFn = Callable[[str], int]

__all__ = ["ClientData", "ClientDataError", "DatasetFn", "PreprocessFn", "NumExamplesFn"]


class ClientData:
    """A population of clients, each with its own ``tf.data.Dataset``.

    A population is a *source* (``dataset_fn(client_id)``, optionally with
    ``num_examples_fn(client_id)`` when sizes are known without reading) plus
    a chain of preprocessing functions. Datasets are built on demand, one
    client at a time, so a population never has to fit in memory.

    The preprocessing chain is wrapped in a single ``tf.function`` that takes
    the client's dataset as its argument: it is traced once for the whole
    population (once per distinct source ``element_spec``), not once per
    client. Python values used by the chain (e.g. a shuffle seed) are therefore
    fixed when the population is preprocessed.

    ``client_source`` (a ``fedsim.data.sources.ClientSource``), when given, says
    how another process builds this same population, so executors whose workers
    live elsewhere (Ray) can build clients there instead of receiving their data.
    """

    def __init__(
        self,
        client_ids: Sequence[str],
        dataset_fn: DatasetFn,
        preprocess_fns: Sequence[PreprocessFn] = (),
        *,
        num_examples_fn: NumExamplesFn | None = None,
        client_source: Optional["ClientSource"] = None,
    ):
        self._client_ids = as_client_ids(client_ids)
        if len(self._client_ids) == 0:
            raise ClientDataError("a population needs at least one client; got no client ids")
        self._dataset_fn = dataset_fn
        self._preprocess_fns = tuple(preprocess_fns)
        self._num_examples_fn = num_examples_fn
        self._client_source = client_source

    # Constructors ---------------------------------------------------------
    @classmethod
    def from_tensor_slices(cls, tensor_slices: Mapping[str, Any]) -> "ClientData":
        """Builds a population from ``{client_id: structure of arrays}``.

        Each structure (a tuple ``(x, y)`` or a mapping of named arrays) is cut
        into examples along its first axis, as ``tf.data.Dataset.from_tensor_slices``.
        All clients must share the structure, dtypes and per-example shapes.
        """
        slices = {str(k): _to_arrays(v) for k, v in tensor_slices.items()}
        if not slices:
            raise ClientDataError(
                "from_tensor_slices needs at least one client; got an empty mapping"
            )
        lengths = {
            client_id: _check_slices(client_id, value) for client_id, value in slices.items()
        }
        _check_same_spec(slices)
        # The same arrays (a new dict: dataset_fn pops from ``slices``), so no memory is doubled.
        source = _arrays_source(dict(slices))

        datasets: dict[str, tf.data.Dataset] = {}

        def dataset_fn(client_id: str) -> tf.data.Dataset:
            # ArrayDataset builds no tf.data graph until read, so a new client
            # costs microseconds; each client's is kept and handed out every
            # round (the same object, so executors' per-dataset caches hit), and
            # the arrays move into it (popped), so memory is not doubled.
            if client_id not in datasets:
                datasets[client_id] = ArrayDataset.from_arrays(slices.pop(client_id))
            return datasets[client_id]

        return cls(list(slices), dataset_fn, num_examples_fn=lengths.__getitem__, client_source=source)

    @classmethod
    def from_clients_and_tf_fn(cls, client_ids: Sequence[str], fn: DatasetFn) -> "ClientData":
        """Builds a population whose client datasets come from ``fn(client_id)``."""
        return cls(client_ids, fn)

    # Access ---------------------------------------------------------------
    @property
    def client_ids(self) -> ClientIds:
        """The ids, as a lazy read-only sequence of ``str`` (cheap for huge populations)."""
        return self._client_ids

    def __len__(self) -> int:
        return len(self._client_ids)

    def __iter__(self) -> Iterator[tf.data.Dataset]:
        """The clients' datasets, in ``client_ids`` order, built one at a time."""
        for client_id in self._client_ids:
            yield self.create_tf_dataset_for_client(client_id)

    def create_tf_dataset_for_client(self, client_id: str) -> tf.data.Dataset:
        """The (preprocessed) dataset of one client."""
        dataset = self._source_dataset(client_id)
        if self._preprocess_fns:
            dataset = self._pipeline(dataset)
        return dataset

    @property
    def client_source(self) -> Optional["ClientSource"]:
        """How another process builds this population (``ClientSource``), or None when unknown.

        Known for SQLite files, tensor slices and populations given one with
        ``with_client_source``; None for a ``from_clients_and_tf_fn`` closure or a split.
        """
        return self._client_source

    def with_client_source(self, source: "ClientSource") -> "ClientData":
        """This population, described by ``source`` (which must build the same ids and datasets)."""
        from fedsim.data.sources import ClientSource  # sources names ClientData: imported late

        if not isinstance(source, ClientSource):
            raise ClientDataError(
                f"with_client_source takes a fedsim.data.sources.ClientSource, got {type(source).__name__}"
            )
        return ClientData(
            self._client_ids, self._dataset_fn, self._preprocess_fns,
            num_examples_fn=self._num_examples_fn, client_source=source,
        )

    @property
    def element_type_structure(self) -> Any:
        """The ``element_spec`` of every client's dataset."""
        return self.create_tf_dataset_for_client(self._client_ids[0]).element_spec

    def preprocess(self, fn: PreprocessFn) -> "ClientData":
        """A new population whose datasets are ``fn(dataset)``; nothing runs until used."""
        return ClientData(
            self._client_ids,
            self._dataset_fn,
            self._preprocess_fns + (fn,),
            num_examples_fn=self._num_examples_fn,
            client_source=None if self._client_source is None else self._client_source.then(fn),
        )

    def num_examples(self, client_id: str) -> int:
        """The number of elements in a client's dataset (counted when not known).

        Without preprocessing this is the source's known size when it has one
        (tensor slices, SQLite metadata); after preprocessing (e.g. batching)
        it counts the elements of the preprocessed dataset.
        """
        if not self._preprocess_fns and self._num_examples_fn is not None:
            self._client_ids.index(client_id)
            return int(self._num_examples_fn(str(client_id)))
        dataset = self.create_tf_dataset_for_client(client_id)
        cardinality = int(dataset.cardinality())
        if cardinality >= 0:
            return cardinality
        return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))

    def sample_client_ids(self, cohort_size: int, seed: int | np.random.Generator) -> list[str]:
        """``cohort_size`` distinct ids drawn uniformly; cost independent of population size."""
        rng = np.random.default_rng(seed)
        positions = sample_positions(len(self._client_ids), cohort_size, rng)
        return [self._client_ids[int(p)] for p in positions]

    def create_tf_dataset_from_all_clients(self, seed: int | None = None) -> tf.data.Dataset:
        """All clients' elements in one dataset, for centralized evaluation.

        Clients are read lazily one after another (in id order, or in an order
        shuffled by ``seed``), so the population is never loaded at once.
        """
        order = np.arange(len(self))
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(self))

        def generate():
            for position in order:
                yield from self.create_tf_dataset_for_client(
                    self._client_ids[int(position)]
                ).as_numpy_iterator()

        return tf.data.Dataset.from_generator(
            generate, output_signature=self.element_type_structure
        )

    # Splits ---------------------------------------------------------------
    def split_by_clients(
        self, test_fraction: float, seed: int
    ) -> tuple["ClientData", "ClientData"]:
        """``(train, test)`` with disjoint clients; ``test`` gets ``test_fraction`` of them."""
        from fedsim.data import (
            splits,
        )  # splits builds ClientData objects; imported late to avoid a cycle.

        return splits.split_by_clients(self, test_fraction, seed)

    def train_test_split_within_clients(
        self, test_fraction: float, seed: int
    ) -> tuple["ClientData", "ClientData"]:
        """``(train, test)`` with the same clients, each client's examples split at random."""
        from fedsim.data import splits  # see split_by_clients

        return splits.split_within_clients(self, test_fraction, seed)

    # Internals shared with fedsim.data.splits -----------------------------
    def _source_dataset(self, client_id: str) -> tf.data.Dataset:
        """The client's dataset before preprocessing; validates the id."""
        client_id = str(client_id)
        self._client_ids.index(client_id)
        return self._dataset_fn(client_id)

    def _source_num_examples(self, client_id: str) -> int:
        if self._num_examples_fn is not None:
            return int(self._num_examples_fn(client_id))
        return int(self._source_dataset(client_id).reduce(np.int64(0), lambda n, _: n + 1))

    def _with_source(
        self,
        client_ids: Sequence[str],
        dataset_fn: DatasetFn,
        num_examples_fn: NumExamplesFn | None,
    ) -> "ClientData":
        """A population with another source and this population's preprocessing."""
        return ClientData(
            client_ids, dataset_fn, self._preprocess_fns, num_examples_fn=num_examples_fn
        )

    @functools.cached_property
    def _pipeline(self) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
        # One tf.function for the population: a dataset argument is traced by
        # its element_spec, so every client reuses the same concrete function.
        fns = self._preprocess_fns

        def apply_all(dataset: tf.data.Dataset) -> tf.data.Dataset:
            for fn in fns:
                dataset = fn(dataset)
            return dataset

        return tf.function(apply_all)


def _arrays_source(slices: Mapping[str, Any]) -> "ClientSource":
    from fedsim.data.sources import ClientSource  # see with_client_source

    return ClientSource(ClientData.from_tensor_slices, (slices,))


def _to_arrays(value: Any) -> Any:
    """Mappings and tuples are structure, anything else one array (as in tf.data)."""
    if isinstance(value, Mapping):
        return {key: _to_arrays(item) for key, item in value.items()}
    if isinstance(value, tuple):
        items = [_to_arrays(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return np.asarray(value)


def _check_slices(client_id: str, value: Any) -> int:
    """The number of examples in one client's arrays; all leaves must agree and be finite."""
    leaves = tf.nest.flatten(value)
    lengths = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in lengths or len(lengths) != 1:
        raise ClientDataError(
            f"client {client_id!r}: every array needs the same first (example) axis, got lengths "
            f"{sorted(lengths, key=str)}; pass arrays shaped [num_examples, ...]"
        )
    for index, leaf in enumerate(leaves):
        # A NaN in the data becomes a NaN model a few rounds later: refuse it at the door.
        if np.issubdtype(leaf.dtype, np.floating) and not np.isfinite(leaf).all():
            example = int(np.argwhere(~np.isfinite(leaf))[0][0])
            raise ClientDataError(
                f"client {client_id!r}: array {index} holds NaN or Inf (first in example {example}); "
                "clean or drop those examples before building the population"
            )
    return lengths.pop()


def _leaf_spec(leaf: np.ndarray) -> tuple[str, tuple[int, ...]]:
    kind = "string" if leaf.dtype.kind in "USO" else leaf.dtype.name
    return kind, leaf.shape[1:]


def _check_same_spec(slices: Mapping[str, Any]) -> None:
    (first_id, first), *rest = slices.items()
    expected = tf.nest.map_structure(_leaf_spec, first)
    for client_id, value in rest:
        try:
            tf.nest.assert_same_structure(first, value)
            spec = tf.nest.map_structure(_leaf_spec, value)
        except (ValueError, TypeError) as error:
            raise ClientDataError(
                f"client {client_id!r} has a different structure from client {first_id!r}: {error}"
            ) from None
        if spec != expected:
            raise ClientDataError(
                f"client {client_id!r} has (dtype, example shape) {spec} but client {first_id!r} "
                f"has {expected}; cast the arrays so that all clients agree"
            )
