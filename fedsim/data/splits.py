"""Train/test splits of a population: by client, or within each client."""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from fedsim.data.client_data import ClientData
from fedsim.data.client_ids import SubsetIds
from fedsim.data.errors import ClientDataError


def split_by_clients(
    client_data: ClientData, test_fraction: float, seed: int
) -> tuple[ClientData, ClientData]:
    """``(train, test)`` with disjoint clients; ``round(test_fraction * n)`` clients go to ``test``.

    Works on client positions, so it stays cheap for lazily backed populations.
    """
    _check_fraction(test_fraction)
    num_clients = len(client_data)
    num_test = round(test_fraction * num_clients)
    if not 1 <= num_test < num_clients:
        raise ClientDataError(
            f"test_fraction={test_fraction} of {num_clients} clients gives {num_test} test "
            "clients; both sides need at least one, so pick a fraction nearer 0.5 or add clients"
        )
    is_test = np.zeros(num_clients, dtype=bool)
    is_test[np.random.default_rng(seed).choice(num_clients, size=num_test, replace=False)] = True
    ids = client_data.client_ids
    train, test = (
        client_data._with_source(
            SubsetIds(ids, np.flatnonzero(mask)),
            client_data._dataset_fn,
            client_data._num_examples_fn,
        )
        for mask in (~is_test, is_test)
    )
    return train, test


def split_within_clients(
    client_data: ClientData, test_fraction: float, seed: int
) -> tuple[ClientData, ClientData]:
    """``(train, test)`` over the same clients; each client's examples are split at random.

    A client with ``n`` examples gives ``round(test_fraction * n)`` of them to
    ``test``. The choice depends only on ``seed`` and the client id, so the two
    halves agree and are reproducible. Preprocessing of ``client_data`` is
    applied after the split, on both halves.
    """
    _check_fraction(test_fraction)

    def test_mask(client_id: str) -> np.ndarray:
        num_examples = client_data._source_num_examples(client_id)
        rng = np.random.default_rng([seed, _stable_hash(client_id)])
        mask = np.zeros(num_examples, dtype=bool)
        mask[rng.choice(num_examples, size=round(test_fraction * num_examples), replace=False)] = (
            True
        )
        return mask

    def half(keep_test: bool) -> ClientData:
        def dataset_fn(client_id: str) -> tf.data.Dataset:
            mask = test_mask(client_id)
            return _select(client_data._dataset_fn(client_id), tf.constant(mask == keep_test))

        def num_examples_fn(client_id: str) -> int:
            return int(np.count_nonzero(test_mask(client_id) == keep_test))

        return client_data._with_source(client_data.client_ids, dataset_fn, num_examples_fn)

    return half(keep_test=False), half(keep_test=True)


@tf.function
def _select(dataset: tf.data.Dataset, keep: tf.Tensor) -> tf.data.Dataset:
    # A tf.function over (dataset, mask) is traced once per element_spec, not per client.
    kept = dataset.enumerate().filter(lambda position, _: tf.gather(keep, position))
    return kept.map(lambda _, element: element)


def _stable_hash(client_id: str) -> int:
    # Python's hash() is salted per process; splits must be reproducible across runs.
    return int.from_bytes(
        hashlib.blake2b(client_id.encode("utf-8"), digest_size=8).digest(), "little"
    )


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ClientDataError(
            f"test_fraction must be strictly between 0 and 1, got {test_fraction}"
        )
