"""How population size affects building a population, sampling and building a cohort.

For populations of 10^3 ... 10^6 clients, backed either by per-client seeded
generation or by a SQLite file in TFF's format, measures in a fresh process
per case:

- build: constructing the ``ClientData`` (SQLite: reading ids and sizes);
- sample: drawing a cohort of 100 client ids;
- cohort: building and fully iterating those 100 clients' datasets, best of
  three cohorts, after one warm-up client (so the one-time ``tf.function``
  trace is not counted);
- peak Python heap (tracemalloc) and peak RSS of the process.

Run: ``python benchmarks/population_scale.py`` (writes
``benchmarks/results/population_scale.md``). The SQLite files are written
to a temporary directory first (rows are cycled from 256 pre-serialized
examples so that writing 4 million rows stays fast) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

# Lets the script (and its per-case child processes) import fedsim from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = (10**3, 10**4, 10**5, 10**6)
COHORT = 100
EXAMPLES_PER_CLIENT = 4
RESULTS = Path(__file__).parent / "results" / "population_scale.md"


def make_examples(rng: np.random.Generator, position: int) -> dict[str, np.ndarray]:
    return {
        "x": rng.normal(size=(EXAMPLES_PER_CLIENT, 8)).astype(np.float32),
        "y": rng.integers(0, 10, EXAMPLES_PER_CLIENT),
    }


def write_sqlite_population(
    path: Path,
    num_clients: int,
    num_features: int = 8,
    examples_per_client: int = EXAMPLES_PER_CLIENT,
) -> None:
    """Writes ``num_clients`` clients ``client_0000000``, ... of ``examples_per_client`` examples
    ``{"x": float32[num_features], "y": int64 in 0..9}`` to a new SQLite file in TFF's format.

    Rows are cycled from 256 pre-serialized examples, so writing millions of rows stays fast.
    ``benchmarks.scaling`` uses it too (with the shared workload's 60 features).
    """
    from fedsim.data.sql import create_schema
    from fedsim.data.tf_example import serialize_example

    rng = np.random.default_rng(0)
    protos = [
        serialize_example({"x": rng.normal(size=num_features).astype(np.float32), "y": i % 10})
        for i in range(256)
    ]
    client_ids = (f"client_{i:07d}" for i in range(num_clients))
    with contextlib.closing(sqlite3.connect(path)) as connection:
        create_schema(connection)
        for chunk_start in range(0, num_clients, 50_000):
            ids = [next(client_ids) for _ in range(min(50_000, num_clients - chunk_start))]
            connection.executemany(
                "INSERT INTO examples VALUES ('train', ?, ?)",
                (
                    (cid, protos[(n * examples_per_client + k) % 256])
                    for n, cid in enumerate(ids)
                    for k in range(examples_per_client)
                ),
            )
            connection.executemany(
                "INSERT INTO client_metadata VALUES (?, 'train', ?)",
                ((cid, examples_per_client) for cid in ids),
            )
        connection.commit()


def measure(backend: str, num_clients: int, database: str) -> dict[str, float]:
    """Runs one case in this process and returns its figures."""
    import tensorflow as tf

    from fedsim.data import read_sql_client_data
    from fedsim.data.generated import seeded_population

    baseline_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    start = time.perf_counter()
    if backend == "generated":
        population = seeded_population(num_clients, make_examples, seed=0)
    else:
        features = {"x": tf.TensorSpec([8], tf.float32), "y": tf.TensorSpec([], tf.int64)}
        population = read_sql_client_data(database, "train", features)
    build = time.perf_counter() - start

    warm_up = population.create_tf_dataset_for_client(population.client_ids[0])
    sum(1 for _ in warm_up)

    start = time.perf_counter()
    cohort = population.sample_client_ids(COHORT, seed=1)
    sample = time.perf_counter() - start

    # Best of three cohorts: the machine is shared, and the minimum is the least noisy figure.
    cohort_times = []
    for seed in (1, 2, 3):
        cohort = population.sample_client_ids(COHORT, seed=seed)
        start = time.perf_counter()
        examples = sum(sum(1 for _ in population.create_tf_dataset_for_client(c)) for c in cohort)
        cohort_times.append(time.perf_counter() - start)
        assert examples == COHORT * EXAMPLES_PER_CLIENT, examples
    cohort_time = min(cohort_times)

    _, heap_peak = tracemalloc.get_traced_memory()
    return {
        "build_s": build,
        "sample_ms": sample * 1e3,
        "cohort_s": cohort_time,
        "heap_peak_mb": heap_peak / 2**20,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_import_mb": baseline_rss_mb,
    }


def run_case(backend: str, num_clients: int, database: Path) -> dict[str, float]:
    # A fresh process per case: peak RSS is a per-process high-water mark.
    output = subprocess.run(
        [sys.executable, __file__, "--child", backend, str(num_clients), str(database)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def to_markdown(rows: list[tuple[str, int, dict[str, float]]]) -> str:
    lines = [
        "# Population scale",
        "",
        f"Cohort of {COHORT} clients, {EXAMPLES_PER_CLIENT} examples each; one process per row. "
        "Produced by `python benchmarks/population_scale.py`.",
        "",
        "| backend | clients | build (s) | sample (ms) | cohort build + iterate, best of 3 (s) "
        "| peak Python heap (MB) | peak RSS (MB) | RSS after imports (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, n, r in rows:
        lines.append(
            f"| {backend} | {n:,} | {r['build_s']:.3f} | {r['sample_ms']:.2f} | {r['cohort_s']:.3f} "
            f"| {r['heap_peak_mb']:.1f} | {r['rss_peak_mb']:.0f} | {r['rss_after_import_mb']:.0f} |"
        )
    lines.append("")
    for backend in ("generated", "sqlite"):
        by_size = {n: r for b, n, r in rows if b == backend}
        lines.append(
            f"- {backend}: cohort time at 10^6 / at 10^3 = "
            f"{by_size[10**6]['cohort_s'] / by_size[10**3]['cohort_s']:.2f}; peak RSS growth 10^3 -> 10^6 = "
            f"{by_size[10**6]['rss_peak_mb'] - by_size[10**3]['rss_peak_mb']:.0f} MB"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--child", nargs=3, metavar=("BACKEND", "CLIENTS", "DATABASE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        backend, num_clients, database = args.child
        print(json.dumps(measure(backend, int(num_clients), database)))
        return
    workdir = Path(tempfile.mkdtemp(prefix="population_scale_"))
    rows = []
    try:
        for n in SIZES:
            database = workdir / f"population_{n}.sqlite"
            start = time.perf_counter()
            write_sqlite_population(database, n)
            print(
                f"wrote {n:,} clients to SQLite in {time.perf_counter() - start:.1f} s", flush=True
            )
            for backend in ("generated", "sqlite"):
                rows.append((backend, n, run_case(backend, n, database)))
                print(backend, n, rows[-1][2], flush=True)
            database.unlink()
    finally:
        shutil.rmtree(workdir)
    report = to_markdown(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
