"""FedProx's straggler experiment on Synthetic(1, 1) (Li et al., 2020, MLSys, section 5.2, Figure 1).

90% of each round's clients straggle: they finish a random number of epochs in
[1, E] with E = 20. FedAvg drops them; FedProx keeps their partial work, with
mu = 0 and mu = 1. Logistic regression, SGD with lr 0.01, batch 10, 10 clients
per round from 30 devices. The training loss over all devices' training data
is recorded every ``--eval-every`` rounds.

    python benchmarks/fedprox_stragglers.py --rounds 60

Writes ``benchmarks/results/fedprox_stragglers.png`` and ``.md``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

import fedsim  # noqa: E402
from fedsim.algorithms import build_fedavg, build_fedprox  # noqa: E402
from fedsim.datasets.synthetic import NUM_CLASSES, NUM_FEATURES, load_synthetic  # noqa: E402
from fedsim.optimizers import SGD  # noqa: E402
from fedsim.simulation.sampling import Stragglers, UniformSampler  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def model_fn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros")])
    spec = (tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec)


def run(process, train, rounds, eval_every, seed):
    sampler = UniformSampler(10, seed)
    ids = list(train.client_ids)
    all_data = [train.create_tf_dataset_for_client(c) for c in ids]
    state = process.initialize()
    curve = [(0, float(process.evaluate(state.model_weights, all_data)["loss"]))]
    for round_num in range(1, rounds + 1):
        cohort = [ids[i] for i in sampler.sample(round_num, len(ids))]
        datasets = [train.create_tf_dataset_for_client(c) for c in cohort]
        state = process.next(state, datasets, cohort).state
        if round_num % eval_every == 0 or round_num == rounds:
            curve.append((round_num, float(process.evaluate(state.model_weights, all_data)["loss"])))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, _ = load_synthetic(1.0, 1.0, num_devices=30, seed=args.seed)
    stragglers = Stragglers(0.9, seed=args.seed)
    common = dict(client_optimizer=SGD(0.01), batch_size=10, local_epochs=20, stragglers=stragglers)
    builders = {
        "FedAvg (drops stragglers)": lambda: build_fedavg(model_fn, **common),
        "FedProx mu=0": lambda: build_fedprox(model_fn, mu=0.0, **common),
        "FedProx mu=1": lambda: build_fedprox(model_fn, mu=1.0, **common),
    }
    curves, seconds = {}, {}
    for name, build in builders.items():
        start = time.perf_counter()
        curves[name] = run(build(), train, args.rounds, args.eval_every, args.seed)
        seconds[name] = time.perf_counter() - start
        print(f"{name}: final training loss {curves[name][-1][1]:.4f} ({seconds[name]:.0f} s)", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        axis.plot([r for r, _ in curve], [loss for _, loss in curve], label=name)
    axis.set(xlabel="round", ylabel="training loss", title="Synthetic(1,1), 90% stragglers, E=20")
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "fedprox_stragglers.png", dpi=120)

    checkpoints = sorted({r for r, _ in next(iter(curves.values()))} & {0, 10, 20, 40, args.rounds})
    lines = [
        "# FedProx straggler experiment (Synthetic(1,1))",
        "",
        f"{args.rounds} rounds, 10 of 30 clients per round, 90% stragglers running 1..20 epochs, "
        f"lr 0.01, batch 10, seed {args.seed}. Training loss over all devices' training data.",
        "",
        "| algorithm | " + " | ".join(f"round {r}" for r in checkpoints) + " | wall time (s) |",
        "| --- | " + " | ".join("---" for _ in checkpoints) + " | --- |",
    ]
    for name, curve in curves.items():
        losses = dict(curve)
        cells = " | ".join(f"{losses[r]:.4f}" for r in checkpoints)
        lines.append(f"| {name} | {cells} | {seconds[name]:.0f} |")
    (RESULTS / "fedprox_stragglers.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
