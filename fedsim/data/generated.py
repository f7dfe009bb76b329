"""Populations generated per client from a seed: any size, nothing stored."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

from fedsim.data.array_dataset import ArrayDataset
from fedsim.data.client_data import ClientData
from fedsim.data.client_ids import RangeIds
from fedsim.data.sources import ClientSource

MakeExamples = Callable[[np.random.Generator, int], Any]


def seeded_population(
    num_clients: int, make_examples: MakeExamples, seed: int, prefix: str = "client_"
) -> ClientData:
    """A population of ``num_clients`` whose client ``i`` holds ``make_examples(rng_i, i)``.

    ``make_examples`` returns a structure of arrays (examples on axis 0), as
    for ``ClientData.from_tensor_slices``; ``rng_i`` is seeded by ``(seed, i)``
    so a client's data is the same whenever it is built. Ids are
    ``f"{prefix}{i}"`` and are never materialized, so building the population
    costs the same for ten clients or ten million.

    A client's dataset is an ``ArrayDataset`` (no tf.data graph until something
    reads it through tf.data), built anew on each request, so memory does not
    grow with the clients seen. The population carries its ``ClientSource``:
    Ray actors generate their clients themselves when ``make_examples`` pickles
    (a module-level function, or a ``functools.partial`` of one).
    """
    client_ids = RangeIds(num_clients, prefix)

    def dataset_fn(client_id: str) -> tf.data.Dataset:
        position = client_ids.index(client_id)
        return ArrayDataset.from_arrays(make_examples(np.random.default_rng([seed, position]), position))

    source = ClientSource(seeded_population, (num_clients, make_examples, seed, prefix))
    return ClientData(client_ids, dataset_fn, client_source=source)
