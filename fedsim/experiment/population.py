"""``fedsim data CONFIG``: build only a config's population and describe it.

No model and no training: the data block is built as ``fedsim run`` builds
it (same seed, so the same clients), each client's labels are read once, and
``fedsim.data.statistics`` summarises them. Reading goes through tf.data, so
TensorFlow starts, but nothing is compiled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import attrs
import numpy as np
import tensorflow as tf

from fedsim.data import ClientData
from fedsim.data.array_dataset import ArrayDataset
from fedsim.data.statistics import PopulationStatistics, describe, label_counts
from fedsim.experiment.blocks import RunConfig
from fedsim.experiment.build_data import build_population

_READ_BATCH = 4096  # labels read per step; large enough that per-batch overhead vanishes


@attrs.frozen
class SplitLabels:
    """Each client's labels (flattened) and example count, in client order."""

    client_ids: list[str]
    labels: list[np.ndarray]
    num_examples: list[int]


@attrs.frozen
class PopulationReport:
    """What ``fedsim data`` prints: per split, the statistics and the labels they came from."""

    num_classes: int
    train: SplitLabels
    test: SplitLabels
    train_statistics: PopulationStatistics
    test_statistics: PopulationStatistics


def read_labels(clients: ClientData) -> SplitLabels:
    """Reads the label part of every client's ``(x, y)`` examples.

    A label may be an array (next-character prediction labels each position);
    it is flattened, and the example still counts once.
    """
    ids, labels, sizes = [], [], []
    for client_id in clients.client_ids:
        count, values = _client_labels(clients.create_tf_dataset_for_client(client_id))
        ids.append(str(client_id))
        labels.append(values)
        sizes.append(count)
    return SplitLabels(ids, labels, sizes)


def _client_labels(dataset: tf.data.Dataset) -> tuple[int, np.ndarray]:
    """``(examples, flat labels)`` of one client's ``(x, y)`` dataset."""
    if isinstance(dataset, ArrayDataset):  # arrays in memory: read them, no tf.data pipeline (ms per client)
        runs = [run[-1] for run in dataset.stacked_elements()]
        return sum(len(y) for y in runs), np.concatenate([np.ravel(y) for y in runs] or [np.zeros(0, np.int64)])
    # ragged_batch: labels may differ in length between examples (sequences);
    # rows count the examples and the values are every label. Batches of
    # equal-length labels come back dense.
    batches = dataset.map(lambda x, y: tf.reshape(y, [-1])).ragged_batch(_READ_BATCH)
    count, values = 0, [np.zeros(0, np.int64)]
    for batch in batches.as_numpy_iterator():
        if isinstance(batch, np.ndarray) and batch.dtype != object:
            count += batch.shape[0]
            values.append(batch.ravel())
        elif isinstance(batch, np.ndarray):  # ragged, as NumPy gives it: one array per example
            count += len(batch)
            values.extend(np.ravel(labels) for labels in batch)
        else:
            count += len(batch.row_splits) - 1
            values.append(np.asarray(batch.flat_values))
    return count, np.concatenate(values)


def describe_population(config: RunConfig) -> PopulationReport:
    """Builds the population of ``config`` (its data block and seed) and describes both splits."""
    population = build_population(config.data, config.seed)
    train, test = read_labels(population.train), read_labels(population.test)
    return PopulationReport(
        population.num_classes,
        train,
        test,
        describe(train.labels, train.num_examples, population.num_classes),
        describe(test.labels, test.num_examples, population.num_classes),
    )


def format_report(report: PopulationReport) -> str:
    """A small aligned table: one column per split."""
    rows = [("clients", lambda s: f"{s.num_clients}"),
            ("empty clients", lambda s: f"{s.empty_clients}"),
            ("examples per client: min", lambda s: f"{s.examples_min}"),
            ("  median", lambda s: f"{s.examples_median:g}"),
            ("  mean", lambda s: f"{s.examples_mean:.1f}"),
            ("  max", lambda s: f"{s.examples_max}"),
            ("distinct labels per client (mean)", lambda s: f"{s.mean_distinct_labels:.2f}"),
            ("label entropy per client (mean, bits)", lambda s: f"{s.mean_label_entropy_bits:.3f}")]
    splits = (report.train_statistics, report.test_statistics)
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':{width}}  {'train':>10}  {'test':>10}"]
    lines += [f"{name:{width}}  {show(splits[0]):>10}  {show(splits[1]):>10}" for name, show in rows]
    lines.append(f"classes: {report.num_classes} (entropy of a uniform client: "
                 f"{np.log2(report.num_classes):.3f} bits)")
    return "\n".join(lines) + "\n"


def plot_label_distribution(
    split: SplitLabels, num_classes: int, out: str | Path, max_clients: int = 50, title: Optional[str] = None
) -> Path:
    """Stacked bars of each client's label proportions, for the first ``max_clients`` clients, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    from matplotlib import pyplot as plt

    shown = slice(0, max(1, max_clients))
    counts = label_counts(split.labels[shown], num_classes).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    proportions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.18 * len(counts) + 2), 4.5), dpi=100)
    try:
        colours = plt.get_cmap("tab20" if num_classes > 10 else "tab10")
        bottom = np.zeros(len(counts))
        positions = np.arange(len(counts))
        for label in range(num_classes):
            axes.bar(positions, proportions[:, label], bottom=bottom, width=0.9,
                     color=colours(label % colours.N), label=str(label) if num_classes <= 20 else None)
            bottom += proportions[:, label]
        axes.set_xlabel(f"client (first {len(counts)} of {len(split.labels)}; empty clients have no bar)")
        axes.set_ylabel("label proportion")
        axes.set_xlim(-0.5, len(counts) - 0.5)
        axes.set_ylim(0, 1)
        if num_classes <= 20:
            axes.legend(title="label", fontsize="x-small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
        axes.set_title(title or "label distribution per client")
        figure.tight_layout()
        out = Path(out)
        figure.savefig(out)
    finally:
        plt.close(figure)
    return out
