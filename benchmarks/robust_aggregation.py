"""Robust aggregation under sign-flipping Byzantine clients.

Self-contained: multinomial logistic regression trained by FedAvg with plain
NumPy local SGD on the FedProx Synthetic(1, 1) data set (Li et al., "Federated
Optimization in Heterogeneous Networks", MLSys 2020), generated here. Each
round samples 10 of 30 devices; in the attacked settings 20% of each cohort
(2 clients) send ``-scale * update`` through ``ByzantineAttack``. The server
applies the aggregated delta with learning rate 1.

Every setting runs twice: on the natural non-IID split by device, and on an
IID split (all training examples pooled, shuffled and dealt into 30 equal
shards), which separates what the attack does from what heterogeneity does
to rules that pick or favour one client. The test set is always the pooled
per-device 20% test splits.

    python benchmarks/robust_aggregation.py

writes ``benchmarks/results/robust_aggregation.{md,png}``.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from fedsim.aggregators import (  # noqa: E402
    ByzantineAttack,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    MeanAggregator,
    TrimmedMean,
)

NUM_DEVICES, DIMENSION, NUM_CLASSES = 30, 60, 10
CLIENTS_PER_ROUND, ROUNDS = 10, 50
LEARNING_RATE, BATCH_SIZE = 0.05, 10
BYZANTINE_FRACTION = 0.2
RESULTS = pathlib.Path(__file__).parent / "results"

AGGREGATORS = {
    "mean (weighted)": MeanAggregator(weighted=True),
    "median": CoordinateMedian(),
    "trimmed mean (beta=0.2)": TrimmedMean(beta=0.2),
    "krum (f=2)": Krum(num_byzantine=2),
    "geometric median": GeometricMedian(),
}
# Attack settings: None is the clean baseline, a number is the sign-flip scale.
SETTINGS = {"no attack": None, "sign flip x1": 1.0, "sign flip x10": 10.0}


def generate_synthetic(alpha: float, beta: float, rng: np.random.Generator):
    """FedProx Synthetic(alpha, beta): per device, train and test ``(x, y)``."""
    counts = rng.lognormal(4, 2, NUM_DEVICES).astype(int) + 50
    covariance = np.diag(np.arange(1, DIMENSION + 1) ** -1.2)
    devices = []
    for count in counts:
        u = rng.normal(0, alpha)
        weights = rng.normal(u, 1, (DIMENSION, NUM_CLASSES))
        bias = rng.normal(u, 1, NUM_CLASSES)
        feature_mean = rng.normal(rng.normal(0, beta), 1, DIMENSION)
        x = rng.multivariate_normal(feature_mean, covariance, count)
        y = np.argmax(x @ weights + bias, axis=1)
        split = int(0.8 * count)
        devices.append(((x[:split], y[:split]), (x[split:], y[split:])))
    return devices


def iid_partition(devices, rng: np.random.Generator):
    """The same examples pooled and dealt into equal shards, one per device."""
    x = np.concatenate([train[0] for train, _ in devices])
    y = np.concatenate([train[1] for train, _ in devices])
    shards = np.array_split(rng.permutation(len(x)), NUM_DEVICES)
    return [((x[shard], y[shard]), test) for shard, (_, test) in zip(shards, devices)]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def local_update(model, x, y, rng):
    """One epoch of minibatch SGD from ``model``; returns the delta."""
    weights, bias = (a.copy() for a in model)
    order = rng.permutation(len(x))
    for start in range(0, len(x), BATCH_SIZE):
        batch = order[start : start + BATCH_SIZE]
        error = softmax(x[batch] @ weights + bias)
        error[np.arange(len(batch)), y[batch]] -= 1.0  # cross-entropy gradient
        weights -= LEARNING_RATE * x[batch].T @ error / len(batch)
        bias -= LEARNING_RATE * error.mean(axis=0)
    return [weights - model[0], bias - model[1]]


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(x @ model[0] + model[1], axis=1) == y))


def train(aggregator, devices, seed: int) -> list[float]:
    """FedAvg with ``aggregator``; test accuracy after each round."""
    rng = np.random.default_rng(seed)
    test_x = np.concatenate([test[0] for _, test in devices])
    test_y = np.concatenate([test[1] for _, test in devices])
    model = [np.zeros((DIMENSION, NUM_CLASSES)), np.zeros(NUM_CLASSES)]
    state, history = aggregator.initialize(), []
    for _ in range(ROUNDS):
        cohort = rng.choice(NUM_DEVICES, CLIENTS_PER_ROUND, replace=False)
        deltas = [local_update(model, *devices[k][0], rng) for k in cohort]
        counts = np.array([len(devices[k][0][1]) for k in cohort], dtype=np.float64)
        output = aggregator.next(state, deltas, counts)
        state = output.state
        model = [m + d for m, d in zip(model, output.result)]
        history.append(accuracy(model, test_x, test_y))
    return history


def with_attack(aggregator, scale: float | None):
    if scale is None:
        return aggregator
    return ByzantineAttack(aggregator, BYZANTINE_FRACTION, kind="sign_flip", scale=scale, seed=2)


def markdown_table(histories) -> str:
    """Final accuracy: one row per aggregator, one column per (partition, setting)."""
    columns = [(partition, setting) for partition in histories for setting in SETTINGS]
    header = "| aggregator | " + " | ".join(f"{p}: {s}" for p, s in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for name in AGGREGATORS:
        cells = [f"{histories[p][s][name][-1]:.3f}" for p, s in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(histories, path: pathlib.Path) -> None:
    figure, axes = plt.subplots(
        len(histories),
        len(SETTINGS),
        figsize=(5 * len(SETTINGS), 4 * len(histories)),
        sharey=True,
        squeeze=False,
    )
    for row, partition in zip(axes, histories):
        for axis, setting in zip(row, SETTINGS):
            for name in AGGREGATORS:
                axis.plot(range(1, ROUNDS + 1), histories[partition][setting][name], label=name)
            axis.set_title(f"{partition}: {setting}")
            axis.set_xlabel("round")
        row[0].set_ylabel("test accuracy")
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    devices = generate_synthetic(1.0, 1.0, np.random.default_rng(0))
    partitions = {"non-IID": devices, "IID": iid_partition(devices, np.random.default_rng(3))}
    histories = {
        partition: {
            setting: {
                name: train(with_attack(rule, scale), data, seed=1)
                for name, rule in AGGREGATORS.items()
            }
            for setting, scale in SETTINGS.items()
        }
        for partition, data in partitions.items()
    }
    table = markdown_table(histories)
    sizes = [len(train_set[1]) for train_set, _ in devices]
    description = (
        f"Final test accuracy after {ROUNDS} rounds, FedProx Synthetic(1,1) "
        f"({NUM_DEVICES} devices, {sum(sizes)} train examples, min/median/max per device "
        f"{min(sizes)}/{int(np.median(sizes))}/{max(sizes)}), {CLIENTS_PER_ROUND} clients per "
        f"round, non-IID split by device or IID reshuffle into {NUM_DEVICES} equal shards, "
        f"{BYZANTINE_FRACTION:.0%} sign-flipping Byzantine clients per cohort in the "
        "attacked columns (update multiplied by -1 or -10).\n"
    )
    print(description)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "robust_aggregation.md").write_text(description + "\n" + table + "\n")
    plot(histories, RESULTS / "robust_aggregation.png")


if __name__ == "__main__":
    main()
