"""RayExecutor (2 actors on this machine) against the in-process SequentialExecutor.

Usage:
  python -m benchmarks.ray_vs_inprocess [--kinds mlp logreg] [--pairs 3] [--rounds 8]
         [--out benchmarks/results/ray_vs_inprocess.md]

The workload is ``../shared/peers/workload.py`` (100 clients of 200 examples,
10 per round, batch 20, SGD 0.05, 1 local epoch). Both executors live in one
process and run alternately (A B A B), so load from elsewhere on the machine
hits both alike; each run's first round is left out (tracing, actor warm-up).
For Ray it also reports where a round's time goes, from ``last_round_stats``.
Prints one JSON line per kind and writes a Markdown report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.fedavg import DEFAULT_WORKLOAD, ReplayedCohorts, load_workload, workload_model_fn  # noqa: E402

NUM_ACTORS = 2
STAT_FIELDS = (
    "export_seconds",
    "put_seconds",
    "dispatch_seconds",
    "wait_seconds",
    "gather_seconds",
    "rebuild_seconds",
    "compute_seconds",
    "wall_seconds",
)


def build(kind: str, workload, executor: str):
    """A FedAvg process on the workload's model with the named executor ("ray" or "sequential")."""
    import keras

    import fedsim
    from fedsim.execution import make_executor
    from fedsim.execution.ray_executor import RayExecutor

    model_fn = workload_model_fn(workload, kind, (60,))
    keras.utils.set_random_seed(0)  # the same initial model weights for both executors
    executor_fn = (
        RayExecutor.factory(model_fn, num_actors=NUM_ACTORS)
        if executor == "ray"
        # Named, not the default: "auto" would pick the vectorized executor.
        else lambda work: make_executor("sequential", work)
    )
    return fedsim.build_fedavg(
        model_fn, client_optimizer=fedsim.SGD(0.05), batch_size=20, executor_fn=executor_fn
    )


def run_once(process, initial_state, data, rounds: int) -> tuple[list[float], list[dict], list]:
    """Round seconds, Ray stats per round (empty for sequential) and final trainable weights."""
    import fedsim

    stats = []

    def record_stats(state, record):
        if process.executor.name == "ray":
            stats.append({f: getattr(process.executor.last_round_stats, f) for f in STAT_FIELDS})

    result = fedsim.simulate(
        process,
        data,
        rounds,
        ReplayedCohorts(100, 10, rounds),
        progress=False,
        state=initial_state,
        callbacks=[record_stats],
    )
    return (
        [r["round_time_s"] for r in result.history][1:],
        stats[1:],
        result.state.model_weights.trainable,
    )


def compare(kind: str, workload, pairs: int, rounds: int) -> dict:
    import numpy as np

    import fedsim

    clients = workload.make_clients(kind=kind)
    data = fedsim.ClientData.from_tensor_slices({f"{i:04d}": xy for i, xy in enumerate(clients)})
    processes = {name: build(kind, workload, name) for name in ("sequential", "ray")}
    # Taken once: initialize() reads the driver's model, which in-process training overwrites.
    initial = {name: process.initialize() for name, process in processes.items()}
    medians = {"sequential": [], "ray": []}
    ray_stats, finals = [], {}
    for _ in range(pairs):
        for name, process in processes.items():  # A B A B
            times, stats, finals[name] = run_once(process, initial[name], data, rounds)
            medians[name].append(statistics.median(times))
            ray_stats += stats
    processes["ray"].executor.shutdown()
    seq, ray_s = statistics.median(medians["sequential"]), statistics.median(medians["ray"])
    return {
        "kind": kind,
        "pairs": pairs,
        "rounds_per_run": rounds,
        "num_actors": NUM_ACTORS,
        "sequential_s_per_round": seq,
        "ray_s_per_round": ray_s,
        "ratio_ray_over_sequential": ray_s / seq,
        "ray_round_breakdown_median_s": {
            f: statistics.median(s[f] for s in ray_stats) for f in STAT_FIELDS
        },
        "max_abs_weight_difference": max(
            float(np.max(np.abs(a - b))) for a, b in zip(finals["ray"], finals["sequential"])
        ),
    }


def markdown(results: list[dict], command: str) -> str:
    lines = [
        "# RayExecutor vs SequentialExecutor",
        "",
        f"{datetime.date.today()} · {platform.machine()} · {os.cpu_count()} CPUs shared with other work "
        f"· `{command}`",
        "",
        "Workload `../shared/peers/workload.py`: 100 clients × 200 examples, 10 per round, batch 20, "
        "SGD 0.05, 1 epoch, equal population. Ray: a local instance, 2 actors (1 CPU each). "
        "Runs alternate A B A B; each value is the median over runs of the run's median s/round "
        "(first round of each run left out).",
        "",
        "| kind | sequential s/round | ray s/round | ray / sequential | max abs weight diff |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['kind']} | {r['sequential_s_per_round']:.4f} | {r['ray_s_per_round']:.4f} | "
            f"{r['ratio_ray_over_sequential']:.2f} | {r['max_abs_weight_difference']:.1e} |"
        )
    lines += [
        "",
        "## Where a Ray round goes (median over rounds, seconds)",
        "",
        "Driver-side values are wall time (export is part of dispatch: each client's "
        "dataset is read into NumPy just before its task is sent); actor-side (rebuild, "
        "compute) are summed over the round's 10 clients, which run on 2 actors at once.",
        "",
        "| kind | "
        + " | ".join(f.removesuffix("_seconds") for f in STAT_FIELDS)
        + " | actors busy |",
        "| --- |" + " --- |" * (len(STAT_FIELDS) + 1),
    ]
    for r in results:
        b = r["ray_round_breakdown_median_s"]
        # Share of the round's actor time (2 actors x wall) spent rebuilding or computing.
        busy = (b["rebuild_seconds"] + b["compute_seconds"]) / (NUM_ACTORS * b["wall_seconds"])
        cells = " | ".join(f"{b[f]:.4f}" for f in STAT_FIELDS)
        lines.append(f"| {r['kind']} | {cells} | {busy:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", nargs="+", choices=["mlp", "logreg"], default=["mlp", "logreg"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "ray_vs_inprocess.md"
    )
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds={args.rounds}: need >= 2 (the first round of a run is left out)")
    import ray

    workload = load_workload(args.workload)
    # Ray workers build the model from the workload module, which they cannot import by name.
    sys.modules[workload.__name__] = workload
    ray.cloudpickle.register_pickle_by_value(workload)
    ray.init(address="local", num_cpus=NUM_ACTORS, include_dashboard=False, log_to_driver=False)
    try:
        results = [compare(kind, workload, args.pairs, args.rounds) for kind in args.kinds]
    finally:
        ray.shutdown()
    for result in results:
        print(json.dumps(result))
    command = "python -m benchmarks.ray_vs_inprocess " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.write_text(markdown(results, command.strip()))


if __name__ == "__main__":
    main()
