"""What a population looks like: client sizes and how labels spread over clients (pure NumPy).

The figures papers report when they build a non-IID population (e.g. Hsu et
al. 2019, Li et al. 2022 "Federated learning on non-IID data silos"): the
number of clients, examples per client, distinct labels per client and the
entropy of each client's label distribution. Entropy is in **bits** (log base
2): a client holding one label has 0 bits, one holding ``k`` labels in equal
shares has ``log2(k)`` bits, so a 10-class IID client is near 3.32.
"""
from __future__ import annotations

from typing import Optional, Sequence

import attrs
import numpy as np


class StatisticsError(ValueError):
    """Labels that cannot be counted (not integers, negative, or beyond ``num_classes``)."""


@attrs.frozen
class PopulationStatistics:
    """Summary of one split (train or test) of a population.

    ``mean_label_entropy_bits`` averages over the clients that hold at least
    one label (an empty client has no label distribution); ``empty_clients``
    says how many were left out. ``mean_distinct_labels`` counts an empty
    client as 0 labels.
    """

    num_clients: int
    empty_clients: int
    examples_min: int
    examples_median: float
    examples_mean: float
    examples_max: int
    mean_distinct_labels: float
    mean_label_entropy_bits: float


def label_counts(labels_per_client: Sequence[np.ndarray], num_classes: Optional[int] = None) -> np.ndarray:
    """``[clients, classes]`` matrix: how often each client holds each label.

    ``num_classes`` defaults to the largest label plus one; labels must be
    integers in ``[0, num_classes)``.
    """
    arrays = [np.asarray(labels).ravel() for labels in labels_per_client]
    for client, labels in enumerate(arrays):
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise StatisticsError(f"client {client}: labels must be integers to count, got {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise StatisticsError(f"client {client}: label {int(labels.min())} is negative; labels are 0 .. C-1")
    largest = max((int(labels.max()) for labels in arrays if labels.size), default=-1)
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise StatisticsError(f"label {largest} is outside [0, {num_classes}); give the right num_classes")
    counts = np.zeros((len(arrays), max(num_classes, 0)), dtype=np.int64)
    for client, labels in enumerate(arrays):
        counts[client] = np.bincount(labels.astype(np.int64), minlength=num_classes)
    return counts


def label_entropy_bits(counts: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row of ``counts`` (NaN for a row of zeros: no distribution)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = counts / totals
        # 0 * log 0 is 0 by continuity; np.where keeps the NaN of an empty row.
        terms = np.where(counts > 0, -p * np.log2(np.where(counts > 0, p, 1.0)), 0.0)
    entropy = terms.sum(axis=1)
    entropy[totals[:, 0] == 0] = np.nan
    return entropy


def describe(
    labels_per_client: Sequence[np.ndarray],
    num_examples: Optional[Sequence[int]] = None,
    num_classes: Optional[int] = None,
) -> PopulationStatistics:
    """The statistics of a population given each client's labels.

    ``num_examples`` is each client's example count; it defaults to the
    number of labels, and differs when an example carries several labels
    (next-character prediction labels every position of a sequence).
    """
    if not len(labels_per_client):
        raise StatisticsError("no clients to describe; the population is empty")
    counts = label_counts(labels_per_client, num_classes)
    sizes = counts.sum(axis=1) if num_examples is None else np.asarray(num_examples, dtype=np.int64)
    if sizes.shape != (len(counts),):
        raise StatisticsError(f"{sizes.size} example counts for {len(counts)} clients; give one per client")
    entropy = label_entropy_bits(counts)
    held = ~np.isnan(entropy)
    return PopulationStatistics(
        num_clients=len(counts),
        empty_clients=int((~held).sum()),
        examples_min=int(sizes.min()),
        examples_median=float(np.median(sizes)),
        examples_mean=float(sizes.mean()),
        examples_max=int(sizes.max()),
        mean_distinct_labels=float((counts > 0).sum(axis=1).mean()),
        mean_label_entropy_bits=float(entropy[held].mean()) if held.any() else float("nan"),
    )
