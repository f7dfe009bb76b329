"""RayExecutor (2 actors) against the in-process executors, and the driver's cost at population scale.

Usage:
  python -m benchmarks.ray_vs_inprocess [--kinds cnn mlp logreg] [--pairs 3] [--rounds 8]
         [--out benchmarks/results/ray_vs_inprocess.md]
  python -m benchmarks.ray_vs_inprocess --scale 1000 1000000 [--pairs 2] [--rounds 6] [--cohort 20]
         [--client-data actors|driver] [--out benchmarks/results/ray_cluster_scale.md]

Throughput (the first form): the workload is ``../shared/peers/workload.py`` (100
clients of 200 examples, 10 per round, batch 20, SGD 0.05, 1 local epoch). Four
executors live in one process and run in turn (A B C D A B C D), so load from
elsewhere on the machine hits all alike; each run's first round is left out
(tracing, actor warm-up): in-process ``sequential`` and ``auto`` (vectorized), and
Ray with 2 actors (1 CPU each) that build their clients from the population's
source and train their share of the cohort in one call (``ray``, the defaults),
build them and train one client per task (``ray_per_client``,
``actor_executor="sequential"``), or receive them exported from the driver
(``ray_driver``, one client per task).

Scale (``--scale``): a FedAvg logistic regression over populations of the given
sizes in TFF SQLite files (written by ``benchmarks.population_scale``'s writer:
4 examples of 8 features per client), on a two-node Ray cluster on this machine
(``ray start --head`` and a second ``ray start --address``, 1 CPU each, their own
ports and session folder) with one actor per node that reads its clients from
the file (``--client-data driver``: the driver reads and exports them, as before
issue 19). Sizes alternate (A B A B); per round it reports the driver's own time
(round time minus the time it waited for actors) and the bytes of client data it
sent. The driver runs in a child process: the cluster uses token authentication,
which Ray reads from the environment once per process.

Prints one JSON line per kind (or size) and writes a Markdown report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.fedavg import DEFAULT_WORKLOAD, ReplayedCohorts, load_workload, workload_model_fn  # noqa: E402
from fedsim.execution.local_cluster import local_ray_cluster  # noqa: E402

NUM_ACTORS = 2
EXECUTORS = ("sequential", "auto", "ray", "ray_per_client", "ray_driver")
RAY_EXECUTORS = {  # name -> RayExecutor options
    "ray": {"client_data": "auto", "actor_executor": "auto"},
    "ray_per_client": {"client_data": "auto", "actor_executor": "sequential"},
    "ray_driver": {"client_data": "driver", "actor_executor": "sequential"},
}
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
SCALE_FEATURES, SCALE_CLASSES = 8, 10  # population_scale's writer: x float32[8], y in 0..9
REPO = Path(__file__).resolve().parents[1]


# Throughput ----------------------------------------------------------------------------------

def build(kind: str, workload, executor: str):
    """A FedAvg process on the workload's model with one of ``EXECUTORS``."""
    import keras

    import fedsim
    from fedsim.execution import make_executor
    from fedsim.execution.ray_executor import RayExecutor

    model_fn = workload_model_fn(workload, kind, (28, 28, 1) if kind == "cnn" else (60,))
    keras.utils.set_random_seed(0)  # the same initial model weights for every executor
    if executor in RAY_EXECUTORS:
        executor_fn = RayExecutor.factory(model_fn, num_actors=NUM_ACTORS, **RAY_EXECUTORS[executor])
    else:  # named: "auto" is the vectorized executor here
        executor_fn = lambda work: make_executor(executor, work)  # noqa: E731
    return fedsim.build_fedavg(
        model_fn, client_optimizer=fedsim.SGD(0.05), batch_size=20, executor_fn=executor_fn
    )


def run_once(process, initial_state, data, rounds: int) -> tuple[list[float], list[dict], list]:
    """Round seconds, Ray stats per round (empty in process) and final trainable weights."""
    import fedsim

    stats = []

    def record_stats(state, record):
        if process.executor.name == "ray":
            stats.append({f: getattr(process.executor.last_round_stats, f) for f in STAT_FIELDS + ("sent_bytes",)})

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
    processes = {name: build(kind, workload, name) for name in EXECUTORS}
    # Taken once: initialize() reads the driver's model, which in-process training overwrites.
    initial = {name: process.initialize() for name, process in processes.items()}
    medians = {name: [] for name in EXECUTORS}
    ray_stats = {name: [] for name in RAY_EXECUTORS}
    finals = {}
    loads = [os.getloadavg()[0]]
    for _ in range(pairs):
        for name, process in processes.items():  # A B C D E
            times, stats, finals[name] = run_once(process, initial[name], data, rounds)
            medians[name].append(statistics.median(times))
            ray_stats.get(name, []).extend(stats)
        loads.append(os.getloadavg()[0])
    for name in RAY_EXECUTORS:
        processes[name].executor.shutdown()
    seconds = {name: statistics.median(m) for name, m in medians.items()}
    return {
        "kind": kind,
        "pairs": pairs,
        "rounds_per_run": rounds,
        "num_actors": NUM_ACTORS,
        "s_per_round": seconds,
        "runs_s_per_round": medians,
        # Throughput ratio: clients per second on Ray over clients per second in process.
        "ray_throughput_over_sequential": seconds["sequential"] / seconds["ray"],
        "ray_throughput_over_auto": seconds["auto"] / seconds["ray"],
        "ray_per_client_throughput_over_auto": seconds["auto"] / seconds["ray_per_client"],
        "load_average_1min": loads,
        "ray_round_breakdown_median": {
            name: {f: statistics.median(s[f] for s in stats) for f in STAT_FIELDS + ("sent_bytes",)}
            for name, stats in ray_stats.items()
        },
        "max_abs_weight_difference": {
            name: max(float(np.max(np.abs(a - b))) for a, b in zip(finals[name], finals["sequential"]))
            for name in EXECUTORS
        },
    }


def markdown(results: list[dict], command: str) -> str:
    lines = [
        "# RayExecutor vs the in-process executors",
        "",
        f"{datetime.date.today()} · {platform.machine()} · {os.cpu_count()} CPUs shared with other work "
        f"· `{command}`",
        "",
        "Workload `../shared/peers/workload.py`: 100 clients × 200 examples, 10 per round, batch 20, "
        "SGD 0.05, 1 epoch, equal population. Ray: a local instance, 2 actors (1 CPU each) that build "
        "their clients from the population's source and train their cohort share in one call (`ray`), "
        "build them and train one client per task (`ray_per_client`), or receive them exported by the "
        "driver (`ray_driver`, one per task). Runs alternate A B C D E; each value is the median over runs "
        "of the run's median s/round (first round of each run left out). Throughput ratio: in-process "
        "s/round over Ray's.",
        "",
        "| kind | sequential s/round | auto s/round | ray s/round | ray_per_client s/round | ray_driver s/round "
        "| ray / sequential throughput | ray / auto throughput | ray_per_client / auto throughput "
        "| max abs weight diff (ray, ray_per_client) | 1-min load average |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        s = r["s_per_round"]
        loads = r["load_average_1min"]
        diff = r["max_abs_weight_difference"]
        lines.append(
            f"| {r['kind']} | {s['sequential']:.4f} | {s['auto']:.4f} | {s['ray']:.4f} | {s['ray_per_client']:.4f} | "
            f"{s['ray_driver']:.4f} | {r['ray_throughput_over_sequential']:.2f} | "
            f"{r['ray_throughput_over_auto']:.2f} | {r['ray_per_client_throughput_over_auto']:.2f} | "
            f"{diff['ray']:.1e}, {diff['ray_per_client']:.1e} | {min(loads):.1f}-{max(loads):.1f} |"
        )
    lines += [
        "",
        "## Where a Ray round goes (median over rounds, seconds; sent: bytes of client data)",
        "",
        "Driver-side values are wall time (export is part of dispatch); actor-side (rebuild, "
        "compute) are summed over the round's 10 clients, which run on 2 actors at once.",
        "",
        "| kind | executor | " + " | ".join(f.removesuffix("_seconds") for f in STAT_FIELDS) + " | sent | actors busy |",
        "| --- | --- |" + " --- |" * (len(STAT_FIELDS) + 2),
    ]
    for r in results:
        for name, b in r["ray_round_breakdown_median"].items():
            # Share of the round's actor time (2 actors x wall) spent rebuilding or computing
            # (a cohort share's compute is its one call, split equally among its clients).
            busy = (b["rebuild_seconds"] + b["compute_seconds"]) / (NUM_ACTORS * b["wall_seconds"])
            cells = " | ".join(f"{b[f]:.4f}" for f in STAT_FIELDS)
            lines.append(f"| {r['kind']} | {name} | {cells} | {b['sent_bytes']:,.0f} | {busy:.0%} |")
    return "\n".join(lines) + "\n"


def throughput(args, argv) -> None:
    import ray

    workload = load_workload(args.workload)
    # Ray workers build the model from the workload module, which they cannot import by name.
    sys.modules[workload.__name__] = workload
    ray.cloudpickle.register_pickle_by_value(workload)
    # Three Ray executors of 2 actors live at once (only one runs at a time): 6 logical CPUs.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # this instance's own session folder
    ray.init(address="local", num_cpus=NUM_ACTORS * len(RAY_EXECUTORS), include_dashboard=False,
             log_to_driver=False, _temp_dir=temp_dir)
    try:
        results = [compare(kind, workload, args.pairs, args.rounds) for kind in args.kinds]
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    for result in results:
        print(json.dumps(result))
    (args.out or REPO / "benchmarks" / "results" / "ray_vs_inprocess.md").write_text(
        markdown(results, _command(argv)))


# Scale: the driver's cost per round against the population's size -------------------------------

def scale_model_fn():
    """Logistic regression over population_scale's examples, fixed initial weights."""
    import keras
    import numpy as np
    import tensorflow as tf

    import fedsim
    from fedsim.models import zoo

    model = zoo.logistic_regression(SCALE_FEATURES, SCALE_CLASSES)
    model.set_weights([np.full((SCALE_FEATURES, SCALE_CLASSES), 0.01, np.float32), np.zeros(SCALE_CLASSES, np.float32)])
    spec = (tf.TensorSpec([None, SCALE_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec)


def as_xy(dataset):
    """The file's {"x", "y": int64} examples as the model's (x, int32 y)."""
    import tensorflow as tf

    return dataset.map(lambda e: (e["x"], tf.cast(e["y"], tf.int32)))


def shuffled(dataset, round_num, client_id):
    """The run's seeded shuffle, as a config run's ``client.shuffle_buffer`` does."""
    from fedsim.client.seeds import client_seed

    return dataset.shuffle(16, seed=client_seed(0, round_num, client_id), reshuffle_each_iteration=True)


def scale_driver(address: str, databases: dict, pairs: int, rounds: int, cohort: int, client_data: str) -> dict:
    """Runs in the child process joined to the cluster: A B A B runs over the populations."""
    import ray
    import tensorflow as tf

    import fedsim
    from fedsim.execution.ray_executor import RayExecutor

    features = {"x": tf.TensorSpec([SCALE_FEATURES], tf.float32), "y": tf.TensorSpec([], tf.int64)}
    populations, open_seconds = {}, {}
    for size, path in databases.items():
        start = time.perf_counter()
        populations[size] = fedsim.data.read_sql_client_data(path, "train", features).preprocess(as_xy)
        open_seconds[size] = time.perf_counter() - start
    executor_fn = RayExecutor.factory(scale_model_fn, address=address, num_actors=NUM_ACTORS, client_data=client_data)
    process = fedsim.build_fedavg(scale_model_fn, client_optimizer=fedsim.SGD(0.1), batch_size=2,
                                  executor_fn=executor_fn)
    initial = process.initialize()
    rows = {size: [] for size in populations}
    loads = [os.getloadavg()[0]]
    with process.executor:
        # 1 CPU per node and per actor: the two actors are on the two nodes.
        alive_nodes = len([n for n in ray.nodes() if n["Alive"]])
        for pair in range(pairs):
            for size, data in populations.items():  # A B A B
                def record(state, record, rows=rows[size]):
                    stats = process.executor.last_round_stats
                    rows.append({
                        "round_s": record["round_time_s"],
                        "driver_s": record["round_time_s"] - stats.wait_seconds,
                        "sent_bytes": stats.sent_bytes,
                        "built_by_actors": stats.built_by_actors,
                        "actor_seconds": stats.rebuild_seconds + stats.compute_seconds,
                        "first": record["round"] == 1,
                    })

                fedsim.simulate(process, data, rounds, fedsim.UniformSampler(cohort_size=cohort, seed=pair),
                                progress=False, state=initial, callbacks=[record], prepare_dataset_fn=shuffled)
                loads.append(os.getloadavg()[0])
    return {
        "alive_nodes": alive_nodes,
        "open_seconds": open_seconds,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average_1min": loads,
        "rounds": {size: rows[size] for size in populations},
    }


def scale(args, argv) -> None:
    from benchmarks.population_scale import write_sqlite_population

    workdir = Path(tempfile.mkdtemp(prefix="ray_scale_"))
    try:
        databases, write_seconds = {}, {}
        for size in args.scale:
            databases[size] = str(workdir / f"population_{size}.sqlite")
            start = time.perf_counter()
            write_sqlite_population(Path(databases[size]), size)
            write_seconds[size] = time.perf_counter() - start
            print(f"wrote {size:,} clients in {write_seconds[size]:.1f} s", flush=True)
        with local_ray_cluster(nodes=2) as (address, env):
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.ray_vs_inprocess", "--scale-driver", address,
                 json.dumps(databases), str(args.pairs), str(args.rounds), str(args.cohort), args.client_data],
                env=env, cwd=REPO, capture_output=True, text=True, timeout=7200,
            )
        if child.returncode != 0:
            raise RuntimeError(f"the driver failed (exit {child.returncode}):\n{child.stderr[-5000:]}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["write_seconds"] = {str(size): seconds for size, seconds in write_seconds.items()}  # as JSON keys
    print(json.dumps(result))
    (args.out or REPO / "benchmarks" / "results" / "ray_cluster_scale.md").write_text(
        scale_markdown(result, args, _command(argv)))


def scale_markdown(result: dict, args, command: str) -> str:
    loads = result["load_average_1min"]
    lines = [
        "# The driver's cost per round against the population's size (two-node Ray cluster)",
        "",
        f"{datetime.date.today()} · {platform.machine()} · {os.cpu_count()} CPUs shared with other work "
        f"· 1-min load average {min(loads):.1f}-{max(loads):.1f} · `{command}`",
        "",
        f"FedAvg logistic regression, cohort {args.cohort}, batch 2, {args.rounds} rounds per run, sizes "
        f"alternating A B A B ({args.pairs} runs each); {result['alive_nodes']} nodes alive, "
        f"{NUM_ACTORS} actors; client_data={args.client_data!r} (actors: each reads the SQLite file itself; "
        "driver: the driver reads and exports every client). Rounds after each run's first (in which each "
        "actor opens the population) only. Driver s/round: the round's wall time minus the time the driver "
        "waited for actors. Sent: client data in the tasks (recipes, or exported arrays).",
        "",
        "| clients | write file (s) | driver opens file (s) | round s (median) | driver s/round (median) "
        "| driver s/round (max) | sent bytes/round (median) | clients built by actors/round | first round s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, rows in result["rounds"].items():
        later = [r for r in rows if not r["first"]]
        first = [r["round_s"] for r in rows if r["first"]]
        lines.append(
            f"| {int(size):,} | {result['write_seconds'][size]:.1f} | {result['open_seconds'][size]:.2f} | "
            f"{statistics.median(r['round_s'] for r in later):.4f} | "
            f"{statistics.median(r['driver_s'] for r in later):.4f} | {max(r['driver_s'] for r in later):.4f} | "
            f"{statistics.median(r['sent_bytes'] for r in later):,.0f} | "
            f"{statistics.median(r['built_by_actors'] for r in later):.0f} | "
            f"{', '.join(f'{s:.1f}' for s in first)} |"
        )
    return "\n".join(lines) + "\n"


def _command(argv) -> str:
    return ("python -m benchmarks.ray_vs_inprocess " + " ".join(argv if argv is not None else sys.argv[1:])).strip()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", nargs="+", choices=["cnn", "mlp", "logreg"], default=["cnn", "mlp", "logreg"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    parser.add_argument("--scale", nargs="+", type=int, metavar="CLIENTS",
                        help="measure the driver's cost per round on a two-node cluster for these population sizes")
    parser.add_argument("--cohort", type=int, default=20, help="cohort size of --scale")
    parser.add_argument("--client-data", choices=["actors", "driver"], default="actors",
                        help="where --scale's clients are read: by the actors from the file, or by the driver")
    parser.add_argument("--scale-driver", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.scale_driver:
        address, databases, pairs, rounds, cohort, client_data = args.scale_driver
        databases = {int(size): path for size, path in json.loads(databases).items()}
        print(json.dumps(scale_driver(address, databases, int(pairs), int(rounds), int(cohort), client_data)))
        return
    if args.rounds < 2:
        parser.error(f"--rounds={args.rounds}: need >= 2 (the first round of a run is left out)")
    if args.scale:
        scale(args, argv)
    else:
        throughput(args, argv)


if __name__ == "__main__":
    main()
