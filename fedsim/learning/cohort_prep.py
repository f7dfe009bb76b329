"""A round's cohort before and after training: its datasets prepared and checked, dropped clients, update weights.

``prepare_cohort`` turns the datasets and ids given to ``FederatedProcess.next``
into a ``Cohort`` (each dataset batched for training, or prepared per client
by ``prepare_client``, which may drop it); ``keep`` removes the clients the
fault policy dropped; ``update_weights`` is each client's weight in the
aggregate.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs
import tensorflow as tf

from fedsim.client.task import ClientOutput
from fedsim.learning.round_records import ClientId, ClientPrep, Cohort, DatasetPrep, ProcessError
from fedsim.learning.validation import check_element_spec


def prepare_cohort(
    client_datasets: Sequence[tf.data.Dataset],
    client_ids: Optional[Sequence[ClientId]],
    round_num: int,
    prepare_train: DatasetPrep,
    prepare_client: Optional[ClientPrep],
    input_spec: Any,
) -> Cohort:
    """The round's cohort: every dataset prepared for training and checked against ``input_spec``.

    Without ``client_ids`` cohort positions stand in. ``prepare_client``
    (when given) replaces ``prepare_train`` and may drop a client (None).
    """
    ids_given = client_ids is not None
    ids = list(client_ids) if ids_given else list(range(len(client_datasets)))
    if len(ids) != len(client_datasets):
        raise ProcessError(
            f"got {len(client_datasets)} client datasets but {len(ids)} client ids; "
            "pass one id per dataset, in the same order"
        )
    if prepare_client is None:
        cohort = Cohort(ids, [_prepared_for_training(d, prepare_train) for d in client_datasets], ids_given)
    else:
        kept_ids, kept, passes = [], [], []
        for client_id, dataset in zip(ids, client_datasets):
            prepared = prepare_client(dataset, round_num, client_id)
            if prepared is not None:
                kept_ids.append(client_id)
                kept.append(prepared[0])
                passes.append(prepared[1])
        cohort = Cohort(kept_ids, kept, ids_given, passes)
    _check_element_specs(cohort, input_spec)
    return cohort


def _prepared_for_training(dataset: tf.data.Dataset, prepare_train: DatasetPrep) -> tf.data.Dataset:
    # Preparing (batching) costs about a millisecond of eager work per client
    # and round. The result is kept on the dataset object itself, so a
    # population that hands out the same dataset every round (e.g. from
    # tensor slices) prepares each client once, and the prepared dataset
    # lives exactly as long as its source (no cache to bound or leak).
    memo = getattr(dataset, "_fedsim_prepared", None)
    if memo is not None and memo[0] is prepare_train:
        return memo[1]
    prepared = prepare_train(dataset)
    if isinstance(dataset, tf.data.Dataset):  # not a ClientRecipe: a new, frozen value every round
        # object.__setattr__: tf.data's trackable __setattr__ would track it as a dependency.
        object.__setattr__(dataset, "_fedsim_prepared", (prepare_train, prepared))
    return prepared


def _check_element_specs(cohort: Cohort, input_spec: Any) -> None:
    """``check_element_spec`` of every client's element spec, skipping a spec equal to the one checked before.

    The check is a pure function of the spec, and a cohort's datasets mostly
    share one: checking each of 1,000 clients cost 23 ms a round, comparing
    a spec with the previous one costs ~4 us.
    """
    previous = None
    for client_id, dataset in zip(cohort.client_ids, cohort.datasets):
        spec = dataset.element_spec
        if previous is not None and spec == previous:
            continue
        check_element_spec(client_id, spec, input_spec)
        previous = spec


def keep(cohort: Cohort, kept: Sequence[int]) -> Cohort:
    """The cohort without the clients the fault policy dropped (``kept``: the positions that stay)."""
    if len(kept) == len(cohort.datasets):
        return cohort
    return attrs.evolve(
        cohort,
        client_ids=[cohort.client_ids[i] for i in kept],
        datasets=[cohort.datasets[i] for i in kept],
        passes=None if cohort.passes is None else [cohort.passes[i] for i in kept],
    )


def update_weights(outputs: Sequence[ClientOutput], cohort: Cohort) -> list[float]:
    """Each client's update weight, counting its data once however many passes it made.

    Client work counts the examples it processed, so a straggler that ran 2 of
    20 epochs would weigh 10 times less than its data; the papers weight by data
    size. An example-count weight equals ``num_examples`` (an unweighted one is
    0 or 1, which never equals the count of two or more passes), so only those
    are divided by the passes.
    """
    if cohort.passes is None:
        return [o.update_weight for o in outputs]
    return [
        (
            o.update_weight / p
            if p > 1 and o.update_weight == float(o.num_examples)
            else o.update_weight
        )
        for o, p in zip(outputs, cohort.passes)
    ]
