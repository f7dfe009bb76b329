"""Partitioners: cut a centralized data set into a federated population.

Each partitioner is seeded and returns one sorted array of example indices per
client; together the arrays hold every example index exactly once.
``to_client_data`` turns such a partition of arrays (or of a
``tf.data.Dataset``, read into memory once) into a ``ClientData``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from fedsim.data.client_data import ClientData
from fedsim.data.errors import ClientDataError

Partition = list[np.ndarray]

# Redraws of a Dirichlet partition before giving up on ``min_size``. Each costs
# one pass over the labels; when 100 fail, the condition is rare enough that
# the draws that meet it are no longer typical Dirichlet ones, so the user
# should change alpha or min_size rather than wait.
MAX_DIRICHLET_ATTEMPTS = 100


class PartitionSizeError(ClientDataError):
    """A partitioner cannot give every client its minimum number of examples."""


def iid(num_examples: int, num_clients: int, seed: int) -> Partition:
    """Shuffled examples dealt into ``num_clients`` parts whose sizes differ by at most one."""
    _check_counts(num_examples, num_clients)
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_label_skew(
    labels: Any,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 0,
    max_attempts: int = MAX_DIRICHLET_ATTEMPTS,
) -> Partition:
    """Label skew: each label's examples are split over clients in Dirichlet(alpha) proportions.

    Small ``alpha`` (e.g. 0.1) gives clients dominated by a few labels; large
    ``alpha`` (e.g. 1000) approaches the IID split. Client sizes vary, and a
    client can be empty when ``alpha`` is small.

    ``min_size`` > 0 redraws the whole partition until every client holds at
    least ``min_size`` examples, as the papers' ``min_require_size`` loop
    (Yurochkin et al. 2019, Hsu et al. 2019) and Flower Datasets'
    ``DirichletPartitioner(min_partition_size=...)`` do: the proportions are
    then Dirichlet draws conditioned on that event. Each redraw continues the
    same seeded generator, so the result is a function of ``seed``; with
    ``min_size=0`` the first draw is returned, as before the option existed.
    After ``max_attempts`` draws without success, ``PartitionSizeError``.
    """
    labels = _labels(labels)
    _check_counts(len(labels), num_clients)
    if alpha <= 0:
        raise ClientDataError(f"alpha must be > 0, got {alpha}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ClientDataError(f"min_size must be an int >= 0, got {min_size!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, (int, np.integer)) or max_attempts < 1:
        raise ClientDataError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    if min_size * num_clients > len(labels):
        raise PartitionSizeError(
            f"min_size={min_size} for {num_clients} clients needs {min_size * num_clients} examples, "
            f"only {len(labels)} given; lower min_size or the number of clients"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    best = -1
    for _ in range(max_attempts):
        parts = _dirichlet_draw(labels, classes, num_clients, alpha, rng)
        smallest = min(len(part) for part in parts)
        if smallest >= min_size:
            return parts
        best = max(best, smallest)
    raise PartitionSizeError(
        f"Dirichlet(alpha={alpha}) over {num_clients} clients: none of {max_attempts} draws gave every "
        f"client min_size={min_size} examples (the best left a client with {best}); lower min_size, "
        "raise alpha (less skew) or use fewer clients"
    )


def _dirichlet_draw(
    labels: np.ndarray, classes: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> Partition:
    """One Dirichlet label-skew partition, drawn from ``rng`` (label by label, in sorted label order)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label in classes:
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.cumsum(_sizes(shares, len(members)))[:-1]
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]


def pathological_shards(
    labels: Any, num_clients: int, shards_per_client: int, seed: int
) -> Partition:
    """McMahan et al. (2017): sort by label, cut equal shards, deal ``shards_per_client`` to each.

    A shard holds a single label whenever every label's count is a multiple of
    the shard size (``num_examples / (num_clients * shards_per_client)``), so
    each client then sees at most ``shards_per_client`` labels.
    """
    labels = _labels(labels)
    num_shards = num_clients * shards_per_client
    if shards_per_client < 1:
        raise ClientDataError(f"shards_per_client must be >= 1, got {shards_per_client}")
    _check_counts(len(labels), num_shards)
    # A stable sort keeps equal labels in index order, so shards are reproducible.
    shards = np.array_split(np.argsort(labels, kind="stable"), num_shards)
    dealt = (
        np.random.default_rng(seed).permutation(num_shards).reshape(num_clients, shards_per_client)
    )
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in dealt]


def quantity_skew(
    num_examples: int, num_clients: int, exponent: float, seed: int, min_examples: int = 1
) -> Partition:
    """Power-law client sizes: shares drawn from a Pareto law with tail ``exponent``.

    Smaller ``exponent`` means heavier tails (a few very large clients). Every
    client gets at least ``min_examples``; examples are assigned at random.
    """
    _check_counts(num_examples, num_clients)
    if exponent <= 0:
        raise ClientDataError(f"exponent must be > 0, got {exponent}")
    if min_examples * num_clients > num_examples:
        raise ClientDataError(
            f"min_examples={min_examples} for {num_clients} clients needs "
            f"{min_examples * num_clients} examples, only {num_examples} given; "
            "lower min_examples or num_clients"
        )
    rng = np.random.default_rng(seed)
    shares = rng.pareto(exponent, num_clients) + 1.0
    spare = num_examples - min_examples * num_clients
    sizes = min_examples + _sizes(shares, spare)
    order = rng.permutation(num_examples)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def to_client_data(
    data: Any, partition: Sequence[np.ndarray], client_ids: Sequence[str] | None = None
) -> ClientData:
    """A population whose client ``i`` holds the examples ``partition[i]`` of ``data``.

    ``data`` is a structure of arrays indexed along the first axis (``(x, y)``
    or ``{name: array}``) or a finite ``tf.data.Dataset``, read into memory once.
    Client ids default to ``"0"``, ``"1"``, ...
    """
    arrays = as_arrays(data) if isinstance(data, tf.data.Dataset) else data
    client_ids = [str(i) for i in range(len(partition))] if client_ids is None else list(client_ids)
    if len(client_ids) != len(partition):
        raise ClientDataError(
            f"{len(client_ids)} client ids for {len(partition)} parts; give one id per part"
        )

    def take(indices: np.ndarray) -> Any:
        return tf.nest.map_structure(lambda array: np.asarray(array)[indices], arrays)

    return ClientData.from_tensor_slices(
        {
            client_id: take(np.asarray(part, dtype=np.int64))
            for client_id, part in zip(client_ids, partition)
        }
    )


def as_arrays(dataset: tf.data.Dataset) -> Any:
    """A finite, unbatched dataset as one structure of NumPy arrays (examples on axis 0)."""
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ClientDataError(
            "cannot read an infinite dataset into arrays; remove .repeat() or add .take(n)"
        )
    elements = list(dataset.as_numpy_iterator())
    if not elements:
        raise ClientDataError("the dataset is empty; nothing to partition")
    return tf.nest.map_structure(lambda *leaves: np.stack(leaves), *elements)


def _labels(labels: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ClientDataError(
            f"labels must be 1-D (one label per example), got shape {labels.shape}"
        )
    return labels


def _check_counts(num_examples: int, num_parts: int) -> None:
    if num_parts < 1 or num_examples < num_parts:
        raise ClientDataError(
            f"cannot cut {num_examples} examples into {num_parts} parts; "
            "need 1 <= parts <= examples"
        )


def _sizes(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer sizes summing to ``total``, proportional to ``shares`` (largest remainder method)."""
    exact = shares / shares.sum() * total
    sizes = np.floor(exact).astype(np.int64)
    largest_remainders_first = np.argsort(sizes - exact, kind="stable")
    sizes[largest_remainders_first[: total - sizes.sum()]] += 1
    return sizes
