"""Scaling figures (issue 19 item 6): cohort size, population size and memory over rounds.

Every round is a full FedAvg round through fedsim's public API, as in
``benchmarks.fedavg`` and ``benchmarks.round_overhead``: the shared peer
workload's models (``../shared/peers/workload.py``: ``mlp``, 54k parameters,
and ``logreg``, 610, over 60 features and 10 classes; ``--kinds``, the first
also for part 2), ``build_fedavg`` with client SGD 0.05, server SGD 1.0,
batch 20, the default executor ``"auto"`` (the vectorized one here), and
``process.next`` over the cohort's prepared client datasets. A round's time is
sampling the cohort + building its datasets + ``process.next``; each round is
also split into parts (the executor's ``train``; inside it reading, stacking
and converting the cohort's arrays and the compiled calls, timed by wrapping
the vectorized executor's private methods when they exist; Python's garbage
collections through ``gc.callbacks``), so a missed goal shows what grew.

1. **Cohort scaling**: 1,000 clients of 200 examples each (the workload's
   equal clients, ``make_clients(1000, 200)``), cohorts of 10, 100 and 1,000
   drawn at random each round. One fresh process per measurement, sizes
   alternated (10, 100, 1000, then 1000, 100, 10, ...; ``--pairs`` times
   each), because the vectorized executor's XLA path (logreg) pads cohorts
   to the largest shape a process has seen: in one process a cohort of 10
   after one of 1,000 would train 32 padded clients. Each process first runs
   untimed rounds over a permutation of all 1,000 clients (tracing, and every
   client's data read and cached once, as in any run after its first
   rounds), then times 100, 30 and 6 rounds (cohorts of 10, 100 and 1,000;
   half with ``--quick``). Figures: median s/round per
   process, the ratios round(100)/round(10) and round(1000)/round(100) per
   pair (processes next to each other in time), median over pairs.
   Goals: at most 8x and at most 9x.
2. **Population scaling**: a cohort of 100 from populations of 10^3, 10^4,
   10^5 and 10^6 clients of 4 examples each (60 features), backed (a) by
   per-client generated data (``fedsim.data.generated.seeded_population``)
   and (b) by a SQLite file in TFF's format (written by
   ``benchmarks.population_scale.write_sqlite_population``, read by
   ``fedsim.data.read_sql_client_data``; the files, ~1.5 GB together, are
   deleted afterwards). All eight populations live in one process (a cohort of
   100 pads to the same shape everywhere) and are visited in sweeps: the
   generated sizes there and back (two rounds each), then each SQLite size
   once; the order rotates every sweep (and the SQLite direction alternates),
   so every size takes every position and load drift hits all alike.
   Figure: median s/round per population and its ratio to the 10^3
   population of the same backend, paired within sweeps (median over sweeps).
   Goal: flat within 10% (every ratio in 0.90..1.10).
3. **Memory**: ``benchmarks.soak`` (the ``mlp`` workload, cohort 10) for 500
   rounds in a fresh process, sampled every 50: RSS (``VmRSS``) and peak RSS
   (``VmHWM``) after round 50 and after round 500. Goal: within 5%; the RSS
   comparison subtracts the per-round records ``simulate`` keeps in its
   history (growth by design, which soak measures).

Usage::

    python -m benchmarks.scaling [--quick] [--kinds mlp,logreg] [--parts cohort,population,memory]
                                 [--pairs 3] [--out benchmarks/results] [--stem scaling]

writes ``scaling.md``, ``scaling.png`` and the raw measurements
``scaling.txt`` (one JSON object per line) into ``--out``
(``scaling_quick.*`` with ``--quick``: 2 pairs, fewer rounds, populations up
to 10^5 only, 6 sweeps). The load average (``os.getloadavg``) is recorded
beside every figure: the machine is shared, so only ratios taken side by side
mean much. About 12 minutes on the 2-core development machine at load 2-5.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]

COHORTS = (10, 100, 1000)
COHORT_POPULATION = 1000  # clients in the cohort-scaling population
COHORT_EXAMPLES = 200  # examples per client there (the shared workload's equal size)
COHORT_ROUNDS = {10: 100, 100: 30, 1000: 6}  # timed rounds per process (x1/2 with --quick)
POPULATIONS = (10**3, 10**4, 10**5, 10**6)
POPULATION_COHORT = 100
POPULATION_SWEEPS = 16  # sweeps over the populations (a multiple of 8 balances the order)
MEMORY_ROUNDS, MEMORY_EVERY = 500, 50
BATCH = 20
NUM_FEATURES = 60  # the shared workload's logreg/mlp input width


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ---------------------------------------------------------------------------
# Building the process and the populations (in a child process)
# ---------------------------------------------------------------------------


def build_process(kind: str, label_dtype):
    """A FedAvg process for the workload's ``kind`` model over ``{"x", "y"}`` or ``(x, y)`` batches."""
    import keras

    import fedsim
    from benchmarks.fedavg import workload_model_fn, DEFAULT_WORKLOAD, load_workload
    from fedsim.execution import make_executor

    workload = load_workload(DEFAULT_WORKLOAD)
    keras.utils.set_random_seed(0)
    model_fn = workload_model_fn(workload, kind, (NUM_FEATURES,), label_dtype)

    process = fedsim.build_fedavg(
        model_fn,
        client_optimizer=fedsim.SGD(0.05),
        server_optimizer=fedsim.SGD(1.0),
        batch_size=BATCH,
        executor_fn=lambda work: make_executor("auto", work),
    )
    return workload, process


class Breakdown:
    """Where a round's time goes: Python's garbage collections, and (probes on the vectorized
    executor's private attributes, skipped when absent) reading clients, stacking the cohort
    in NumPy, converting it to tensors and the compiled chunk calls."""

    def __init__(self, process):
        self.times: dict[str, float] = {}
        self.collections = 0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)
        self.trainer = getattr(process.executor, "trainer", None)

    def _on_gc(self, phase, info) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.add("gc", time.perf_counter() - self._gc_started)
            self.collections += 1

    def add(self, key: str, seconds: float) -> None:
        self.times[key] = self.times.get(key, 0.0) + seconds

    def reset(self) -> None:
        self.times, self.collections = {}, 0

    def install(self) -> None:
        """Wraps the executor's internals; call after warm-up (the graph path's function exists then)."""
        if self.trainer is None:
            return
        try:
            from fedsim.execution import vectorized
        except ImportError:
            return
        self._wrap(vectorized, "stack_clients", "stack")
        self._wrap(self.trainer, "read", "read")
        for attr in ("_xla_steps", "_graph_steps"):
            function = getattr(self.trainer, attr, None)
            if function is not None:
                setattr(self.trainer, attr, self._split_conversion(function))

    def _wrap(self, owner, name: str, key: str) -> None:
        function = getattr(owner, name, None)
        if function is None:
            return

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - start)

        setattr(owner, name, timed)

    def _split_conversion(self, function):
        import numpy as np
        import tensorflow as tf

        def timed(*args):
            start = time.perf_counter()
            args = tf.nest.map_structure(lambda a: tf.convert_to_tensor(a) if isinstance(a, np.ndarray) else a, args)
            converted = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.add("to_tensor", converted - start)
                self.add("compute", time.perf_counter() - converted)

        return timed


class TimedRounds:
    """Runs rounds of ``process`` and splits each round's time into its parts."""

    def __init__(self, process):
        self.process = process
        self.state = process.initialize()
        self.breakdown = Breakdown(process)
        train = process.executor.train

        def timed_train(*args, **kwargs):
            start = time.perf_counter()
            try:
                return train(*args, **kwargs)
            finally:
                self.breakdown.add("train", time.perf_counter() - start)

        process.executor.train = timed_train

    def round(self, population, cohort_size: int, rng, client_ids=None) -> dict[str, float]:
        """One round: sample (unless ``client_ids``), build the datasets, ``process.next``."""
        self.breakdown.reset()
        start = time.perf_counter()
        if client_ids is None:
            client_ids = population.sample_client_ids(cohort_size, rng)
        sampled = time.perf_counter()
        datasets = [population.create_tf_dataset_for_client(c) for c in client_ids]
        built = time.perf_counter()
        self.state = self.process.next(self.state, datasets, client_ids).state
        done = time.perf_counter()
        parts = {f"{key}_s": value for key, value in self.breakdown.times.items()}
        return {
            "round_s": done - start,
            "sample_s": sampled - start,
            "build_s": built - sampled,
            "next_s": done - built,
            "train_s": 0.0, "gc_s": 0.0, **parts,
            "gc_collections": self.breakdown.collections,
        }


def medians(records: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for r in records for key in r}
    return {key: statistics.median(r.get(key, 0.0) for r in records) for key in sorted(keys)}


def read_memory_mb() -> tuple[float, float]:
    from benchmarks.soak import read_memory_mb as read

    return read()


# ---------------------------------------------------------------------------
# Part 1: cohort scaling, one process per measurement
# ---------------------------------------------------------------------------


def cohort_child(kind: str, cohort: int, rounds: int) -> dict:
    import numpy as np
    import tensorflow as tf

    import fedsim

    workload, process = build_process(kind, tf.int32)
    clients = workload.make_clients(
        num_clients=COHORT_POPULATION, examples_per_client=COHORT_EXAMPLES, kind=kind
    )
    population = fedsim.ClientData.from_tensor_slices({f"{i:04d}": xy for i, xy in enumerate(clients)})
    del clients
    runner = TimedRounds(process)
    rng = np.random.default_rng(cohort)
    ids = population.client_ids
    started = time.perf_counter()
    # Untimed: every client once (a permutation in cohorts of `cohort`), then one more round.
    order = rng.permutation(len(ids))
    for first in range(0, len(ids), cohort):
        runner.round(population, cohort, rng, [ids[int(p)] for p in order[first:first + cohort]])
    runner.round(population, cohort, rng)
    runner.breakdown.install()
    warm_up = time.perf_counter() - started
    load_before = load_average()
    records = [runner.round(population, cohort, rng) for _ in range(rounds)]
    for r in records:
        r["train_other_s"] = r["train_s"] - sum(
            r.get(key, 0.0) for key in ("read_s", "stack_s", "to_tensor_s", "compute_s"))
    rss, hwm = read_memory_mb()
    return {
        "part": "cohort", "kind": kind, "cohort": cohort, "rounds": rounds,
        "executor": process.executor.name, **medians(records),
        "round_s_mean": statistics.mean(r["round_s"] for r in records),
        "gc_s_mean": statistics.mean(r["gc_s"] for r in records),
        "round_s_all": [r["round_s"] for r in records],
        "warm_up_s": warm_up, "rss_mb": rss, "hwm_mb": hwm,
        "load_before": load_before, "load_after": load_average(),
    }


def run_child(*args: str) -> dict:
    """Runs one measurement in a fresh process (``--child ...``) and returns its JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--child", *args],
        capture_output=True, text=True, cwd=ROOT,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"benchmarks.scaling --child {' '.join(args)} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cohort_part(kind: str, pairs: int, quick: bool, log) -> dict:
    rounds = {c: max(3, n // 2) if quick else n for c, n in COHORT_ROUNDS.items()}
    runs = []
    for pair in range(pairs):
        order = COHORTS if pair % 2 == 0 else COHORTS[::-1]
        for cohort in order:
            result = run_child("cohort", kind, str(cohort), str(rounds[cohort]))
            result["pair"] = pair
            runs.append(result)
            log(result)
            print(
                f"  cohort {cohort:>5}  pair {pair}  {result['round_s'] * 1e3:9.1f} ms/round  "
                f"(train {result['train_s'] * 1e3:.1f} ms)  load {result['load_before'][0]}",
                flush=True,
            )
    ratios = []
    for pair in range(pairs):
        by_cohort = {r["cohort"]: r for r in runs if r["pair"] == pair}
        ratios.append({
            "100/10": by_cohort[100]["round_s"] / by_cohort[10]["round_s"],
            "1000/100": by_cohort[1000]["round_s"] / by_cohort[100]["round_s"],
        })
    return {"runs": runs, "ratios": ratios, "rounds": rounds}


# ---------------------------------------------------------------------------
# Part 2: population scaling, one process, round-robin over the populations
# ---------------------------------------------------------------------------


def make_examples(rng, position: int) -> dict:
    """A generated client: 4 examples of 60 standard-normal features, labels 0..9 (int64)."""
    from benchmarks.population_scale import EXAMPLES_PER_CLIENT

    return {
        "x": rng.standard_normal((EXAMPLES_PER_CLIENT, NUM_FEATURES)).astype("float32"),
        "y": rng.integers(0, 10, EXAMPLES_PER_CLIENT),
    }


def population_child(kind: str, sizes: list[int], workdir: str, sweeps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from fedsim.data import read_sql_client_data
    from fedsim.data.generated import seeded_population

    _, process = build_process(kind, tf.int64)
    features = {"x": tf.TensorSpec([NUM_FEATURES], tf.float32), "y": tf.TensorSpec([], tf.int64)}
    populations, open_s = {}, {}
    for n in sizes:
        populations["generated", n] = seeded_population(n, make_examples, seed=0)
        start = time.perf_counter()
        populations["sqlite", n] = read_sql_client_data(Path(workdir) / f"clients_{n}.sqlite", "train", features)
        open_s[f"sqlite/{n}"] = time.perf_counter() - start
    runner = TimedRounds(process)
    rng = np.random.default_rng(0)
    for population in populations.values():  # untimed: tracing of both read paths
        for _ in range(2):
            runner.round(population, POPULATION_COHORT, rng)
    runner.breakdown.install()
    records: dict[str, list] = {f"{b}/{n}": [] for b, n in populations}
    loads = [load_average()]
    for sweep in range(sweeps):
        # Balanced: the order rotates by one size every sweep, so every size takes every
        # position equally often. A round's speed depends on the rounds before it: with a
        # fixed order (10^3 always first after the SQLite block) the generated 10^3 rounds
        # came out 6-11% faster than 10^5 and 10^6, where 10^3 and 10^6 alone, alternating,
        # differ by 0.2%.
        # Generated rounds are cheap: there and back (A B C D D C B A); SQLite rounds once
        # each, the direction alternating.
        shift = sweep % len(sizes)
        rotated = sizes[shift:] + sizes[:shift]
        order = [("generated", n) for n in rotated + rotated[::-1]]
        order += [("sqlite", n) for n in (rotated if sweep % 2 == 0 else rotated[::-1])]
        for backend, n in order:
            record = runner.round(populations[backend, n], POPULATION_COHORT, rng)
            records[f"{backend}/{n}"].append({**record, "sweep": sweep})
        if sweep % 5 == 4:
            loads.append(load_average())
    loads.append(load_average())
    rss, hwm = read_memory_mb()
    return {
        "part": "population", "kind": kind, "sizes": sizes, "sweeps": sweeps,
        "executor": process.executor.name, "open_s": open_s,
        "cases": {
            key: {**medians(rs), "round_s_all": [r["round_s"] for r in rs], "sweep_all": [r["sweep"] for r in rs]}
            for key, rs in records.items()
        },
        "loads": loads, "rss_mb": rss, "hwm_mb": hwm,
    }


def population_part(kind: str, sizes: list[int], sweeps: int, log) -> dict:
    from benchmarks.population_scale import write_sqlite_population

    workdir = Path(tempfile.mkdtemp(prefix="fedsim_scaling_"))
    written = {}
    try:
        for n in sizes:
            start = time.perf_counter()
            path = workdir / f"clients_{n}.sqlite"
            write_sqlite_population(path, n, num_features=NUM_FEATURES)
            written[n] = {"write_s": time.perf_counter() - start, "file_mb": path.stat().st_size / 2**20}
            print(f"  wrote {n:,} clients to SQLite in {written[n]['write_s']:.1f} s "
                  f"({written[n]['file_mb']:.0f} MiB)", flush=True)
        result = run_child("population", kind, ",".join(map(str, sizes)), str(workdir), str(sweeps))
    finally:
        shutil.rmtree(workdir)
    result["written"] = written
    log(result)
    for key, case in result["cases"].items():
        print(f"  {key:>18}  {case['round_s'] * 1e3:8.1f} ms/round  (build {case['build_s'] * 1e3:.1f}, "
              f"next {case['next_s'] * 1e3:.1f}, train {case['train_s'] * 1e3:.1f})", flush=True)
    return result


# ---------------------------------------------------------------------------
# Part 3: memory over 500 rounds (benchmarks.soak in a fresh process)
# ---------------------------------------------------------------------------


def memory_child(rounds: int, every: int) -> dict:
    from benchmarks import soak

    load_before = load_average()
    started = time.perf_counter()
    samples = soak.run(rounds, every)
    return {
        "part": "memory", "rounds": rounds, "every": every, "samples": samples,
        "wall_s": time.perf_counter() - started,
        "load_before": load_before, "load_after": load_average(),
    }


def memory_part(log) -> dict:
    result = run_child("memory", str(MEMORY_ROUNDS), str(MEMORY_EVERY))
    log(result)
    early, late = memory_figures(result)
    print(f"  round {MEMORY_EVERY}: RSS {early['rss_mb']:.1f} MiB, peak {early['hwm_mb']:.1f} MiB; round "
          f"{MEMORY_ROUNDS}: RSS {late['rss_mb']:.1f} MiB, peak {late['hwm_mb']:.1f} MiB", flush=True)
    return result


def memory_figures(result: dict) -> tuple[dict, dict]:
    by_round = {s["round"]: s for s in result["samples"]}
    return by_round[result["every"]], by_round[result["rounds"]]


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def ms(record: dict, key: str) -> str:
    return f"{record.get(key, 0.0) * 1e3:.1f}"


def cohort_section(part: dict, kind: str) -> tuple[list[str], dict]:
    runs, ratios = part["runs"], part["ratios"]
    lines = [
        f"### Cohort scaling: {kind} (1,000 clients x 200 examples, batch 20, executor "
        f"`{runs[0]['executor']}`)",
        "",
        "One fresh process per row, in the order run; timed rounds after a warm-up that reads every "
        f"client once (rounds timed: {', '.join(f'{c}: {n}' for c, n in part['rounds'].items())}). "
        "Medians over the process's timed rounds, in ms (`mean` is the mean round): `train` is the "
        "executor's call inside `process.next`, `outside` the rest of `next` (the round's Python: "
        "messages, aggregation, server update). Inside `train`: `stack` pads and stacks the "
        "cohort's cached client arrays (NumPy), `to tensor` converts them for the compiled call, "
        "`compute` is the compiled chunk calls (at most 32 clients each), `other` the rest (results "
        "to NumPy, the chunks' per-client results concatenated and put back in cohort order, "
        "per-client outputs). `gc` is Python's cyclic garbage collector anywhere in the round: "
        "median / mean ms, collections per round in brackets.",
        "",
        "| pair | cohort | ms/round | mean | ms per client | train | stack | to tensor | compute | other "
        "| outside | gc | load avg (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['pair']} | {r['cohort']:,} | {r['round_s'] * 1e3:.1f} | {ms(r, 'round_s_mean')} | "
            f"{r['round_s'] * 1e3 / r['cohort']:.2f} | {ms(r, 'train_s')} | {ms(r, 'stack_s')} | "
            f"{ms(r, 'to_tensor_s')} | {ms(r, 'compute_s')} | {ms(r, 'train_other_s')} | "
            f"{(r['next_s'] - r['train_s']) * 1e3:.1f} | {ms(r, 'gc_s')} / {ms(r, 'gc_s_mean')} "
            f"({r.get('gc_collections', 0):.0f}) | {r['load_before'][0]:.2f} |"
        )
    r1 = statistics.median(r["100/10"] for r in ratios)
    r2 = statistics.median(r["1000/100"] for r in ratios)
    lines += [
        "",
        "| ratio | per pair | median | goal |",
        "|---|---|---:|---|",
        f"| round(100) / round(10) | {', '.join(format(r['100/10'], '.2f') for r in ratios)} | {r1:.2f} | "
        f"<= 8: {met(r1 <= 8)} |",
        f"| round(1000) / round(100) | {', '.join(format(r['1000/100'], '.2f') for r in ratios)} | {r2:.2f} | "
        f"<= 9: {met(r2 <= 9)} |",
    ]
    return lines, {"100/10": r1, "1000/100": r2}


def size_label(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"10^{exponent}" if n == 10**exponent else f"{n:,}"


def paired_ratio(case: dict, base: dict) -> float:
    """Median over sweeps of (this case's mean round in the sweep) / (the base's mean round in it)."""

    def by_sweep(c: dict) -> dict[int, float]:
        groups: dict[int, list[float]] = {}
        for sweep, seconds in zip(c["sweep_all"], c["round_s_all"]):
            groups.setdefault(sweep, []).append(seconds)
        return {sweep: statistics.mean(v) for sweep, v in groups.items()}

    mine, theirs = by_sweep(case), by_sweep(base)
    return statistics.median(mine[s] / theirs[s] for s in mine)


def population_section(part: dict, kind: str) -> tuple[list[str], dict]:
    cases, sizes = part["cases"], part["sizes"]
    lines = [
        f"### Population scaling: {kind} (cohort {POPULATION_COHORT}, 4 examples per client, executor "
        f"`{part['executor']}`)",
        "",
        f"One process, {part['sweeps']} sweeps over the {len(cases)} populations (each sweep: the "
        "generated sizes there and back, two rounds each, then one round of each SQLite size; the "
        "order rotates by one size every sweep and the SQLite direction alternates, so every size "
        "takes every position); a round is sample + build datasets + `process.next`. ms are "
        "medians over the rounds; `/ 10^3 (paired)` is the median over sweeps of this population's "
        "mean round in the sweep over the same sweep's 10^3 round (so load drift between sweeps "
        "cancels), `ratio of medians` the same from the medians. `read` "
        "is the executor reading the clients' datasets into arrays (inside `train`, inside `next`). "
        "Load average (1 min) during the sweeps: "
        f"{', '.join(f'{load[0]:.2f}' for load in part['loads'])}. Peak RSS of the process with all "
        f"{len(cases)} populations open: {part['hwm_mb']:.0f} MiB; opening the SQLite files took "
        f"{', '.join(f'{v:.1f} s' for v in part['open_s'].values())} (ids and sizes read once).",
        "",
        "| backend | clients | ms/round | / 10^3 (paired) | ratio of medians | sample ms | build ms | next ms "
        "| train ms | read ms | gc ms | SQLite file MiB (write s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = {}
    for backend in ("generated", "sqlite"):
        base = cases[f"{backend}/{sizes[0]}"]
        worst[backend] = 0.0
        for n in sizes:
            c = cases[f"{backend}/{n}"]
            paired = paired_ratio(c, base)
            of_medians = c["round_s"] / base["round_s"]
            worst[backend] = max(worst[backend], abs(paired - 1))
            written = part["written"].get(str(n)) or part["written"].get(n)
            file_cell = f"{written['file_mb']:.0f} ({written['write_s']:.0f})" if backend == "sqlite" else ""
            lines.append(
                f"| {backend} | {size_label(n)} | {c['round_s'] * 1e3:.1f} | {paired:.3f} | {of_medians:.3f} | "
                f"{c['sample_s'] * 1e3:.2f} | {c['build_s'] * 1e3:.1f} | {c['next_s'] * 1e3:.1f} | "
                f"{c['train_s'] * 1e3:.1f} | {ms(c, 'read_s')} | {ms(c, 'gc_s')} | {file_cell} |"
            )
    lines.append("")
    for backend in ("generated", "sqlite"):
        lines.append(
            f"- {backend}: largest paired deviation from 10^3 over 10^3..{size_label(sizes[-1])}: "
            f"{worst[backend] * 100:.1f}% (goal within 10%: {met(worst[backend] <= 0.10)})"
        )
    return lines, worst


def memory_section(part: dict) -> tuple[list[str], dict]:
    early, late = memory_figures(part)
    history = late["history_mb"] - early["history_mb"]
    rss_growth = (late["rss_mb"] - history) / early["rss_mb"] - 1
    hwm_growth = late["hwm_mb"] / early["hwm_mb"] - 1
    lines = [
        f"### Memory over {part['rounds']} rounds (`benchmarks.soak`: mlp workload, cohort 10, executor `auto`)",
        "",
        f"One process, {part['wall_s']:.0f} s; load average (1 min) {part['load_before'][0]:.2f} before, "
        f"{part['load_after'][0]:.2f} after.",
        "",
        "| round | RSS MiB | peak RSS (VmHWM) MiB | history records MiB | ms/round (block mean) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in part["samples"]:
        if s["hwm_mb"] is None:
            lines.append(f"| {s['round']} (before round 1) | {s['rss_mb']:.1f} | | | |")
            continue
        lines.append(f"| {s['round']} | {s['rss_mb']:.1f} | {s['hwm_mb']:.1f} | {s['history_mb']:.2f} | "
                     f"{s['round_ms']:.1f} |")
    lines += [
        "",
        f"- peak RSS, round {part['rounds']} / round {part['every']}: {late['hwm_mb']:.1f} / "
        f"{early['hwm_mb']:.1f} MiB = {hwm_growth * 100:+.2f}% (goal within 5%: {met(abs(hwm_growth) <= 0.05)})",
        f"- RSS, round {part['rounds']} less the {history:.2f} MiB of history records kept since round "
        f"{part['every']} / round {part['every']}: {rss_growth * 100:+.2f}% "
        f"(goal within 5%: {met(abs(rss_growth) <= 0.05)})",
    ]
    return lines, {"hwm": hwm_growth, "rss": rss_growth}


def plot(results: dict, path: Path, kind: str) -> None:
    """Round time against cohort size (every kind) and against population size (``kind``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("cohort", "population") if p in results]
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        if panel == "cohort":
            for (cohort_kind, part), color in zip(results["cohort"].items(), ("tab:blue", "tab:red")):
                runs = part["runs"]
                sizes = sorted({r["cohort"] for r in runs})
                axis.scatter([r["cohort"] for r in runs], [r["round_s"] for r in runs], color=color, alpha=0.4, s=12)
                med = [statistics.median(r["round_s"] for r in runs if r["cohort"] == c) for c in sizes]
                axis.plot(sizes, med, marker="o", color=color, label=f"{cohort_kind} (median over processes)")
                axis.plot(sizes, [med[0] * c / sizes[0] for c in sizes], linestyle=":", color=color, alpha=0.6,
                          label=f"{cohort_kind}: linear from cohort {sizes[0]}")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("cohort size (clients per round)")
            axis.set_title("round time vs cohort (200 examples per client)")
        else:
            part = results["population"]
            for backend, color in (("generated", "tab:green"), ("sqlite", "tab:orange")):
                ys = [part["cases"][f"{backend}/{n}"]["round_s"] for n in part["sizes"]]
                axis.plot(part["sizes"], ys, marker="o", color=color, label=backend)
            axis.set_xscale("log")
            axis.set_ylim(bottom=0)
            axis.set_xlabel("population size (clients)")
            axis.set_title(f"round time vs population (cohort {POPULATION_COHORT}, {kind})")
        axis.set_ylabel("s per round")
        axis.legend(fontsize=8)
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(results: dict, args, stem: str, wall: float) -> str:
    kind = args.kinds[0]
    lines = [
        "# Scaling (issue 19 item 6)",
        "",
        f"Produced by `python -m benchmarks.scaling{' --quick' if args.quick else ''} --kinds {','.join(args.kinds)} "
        f"--pairs {args.pairs} --parts {','.join(args.parts)}{f' --stem {args.stem}' if args.stem else ''}` "
        f"in {wall / 60:.1f} min on the 2-core "
        f"development machine (shared with other jobs). Load average at the start: "
        f"{results['load_start']}, at the end: {results['load_end']} (1, 5, 15 min). Python {sys.version.split()[0]}; "
        f"raw measurements in `{stem}.txt`. See the module docstring of `benchmarks/scaling.py` for the method.",
        "",
    ]
    summary = []
    for cohort_kind, part in results.get("cohort", {}).items():
        section, r = cohort_section(part, cohort_kind)
        lines += section + [""]
        summary += [f"{cohort_kind}: cohort 100 / 10 = {r['100/10']:.2f}x (<= 8x: {met(r['100/10'] <= 8)})",
                    f"{cohort_kind}: cohort 1,000 / 100 = {r['1000/100']:.2f}x (<= 9x: {met(r['1000/100'] <= 9)})"]
    if "population" in results:
        section, worst = population_section(results["population"], kind)
        lines += section + [""]
        summary += [f"population 10^3..{size_label(results['population']['sizes'][-1])}, {b}: largest deviation "
                    f"{w * 100:.1f}% (within 10%: {met(w <= 0.10)})" for b, w in worst.items()]
    if "memory" in results:
        section, g = memory_section(results["memory"])
        lines += section + [""]
        summary += [f"peak RSS 500 vs 50 rounds {g['hwm'] * 100:+.2f}%, RSS less history {g['rss'] * 100:+.2f}% "
                    f"(within 5%: {met(abs(g['hwm']) <= 0.05 and abs(g['rss']) <= 0.05)})"]
    lines += ["### Goals", ""] + [f"- {s}" for s in summary] + [""]
    if "cohort" in results or "population" in results:  # the plot has a panel for each
        lines += [f"![round time]({stem}.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2 pairs, half the rounds, populations up to 10^5: a few minutes")
    parser.add_argument("--kinds", default="mlp,logreg",
                        help="workloads for cohort scaling (comma-separated: mlp, logreg); the first is also "
                             "the population-scaling model")
    parser.add_argument("--parts", default="cohort,population,memory",
                        help="comma-separated subset of cohort,population,memory")
    parser.add_argument("--pairs", type=int, default=None, help="cohort-scaling pairs (default 3, quick 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stem", default=None,
                        help="file name stem in --out (default scaling, or scaling_quick with --quick)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        part, *rest = args.child
        if part == "cohort":
            result = cohort_child(rest[0], int(rest[1]), int(rest[2]))
        elif part == "population":
            result = population_child(rest[0], [int(n) for n in rest[1].split(",")], rest[2], int(rest[3]))
        else:
            result = memory_child(int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kinds or set(args.kinds) - {"mlp", "logreg"}:
        parser.error(f"--kinds {args.kinds}: choose from mlp, logreg")
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - {"cohort", "population", "memory"}
    if unknown or not args.parts:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from cohort, population, memory")
    if args.pairs is None:
        args.pairs = 2 if args.quick else 3
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    stem = args.stem or ("scaling_quick" if args.quick else "scaling")
    args.out.mkdir(parents=True, exist_ok=True)
    raw_path = args.out / f"{stem}.txt"
    raw = raw_path.open("w", encoding="utf-8")

    def log(record: dict) -> None:
        raw.write(json.dumps(record) + "\n")
        raw.flush()

    started = time.perf_counter()
    results: dict = {"load_start": load_average()}
    log({"part": "start", "load": results["load_start"], "args": sys.argv[1:]})
    if "cohort" in args.parts:
        results["cohort"] = {}
        for kind in args.kinds:
            print(f"cohort scaling ({kind}, {args.pairs} pairs of fresh processes)", flush=True)
            results["cohort"][kind] = cohort_part(kind, args.pairs, args.quick, log)
    if "population" in args.parts:
        sizes = list(POPULATIONS[:-1] if args.quick else POPULATIONS)
        sweeps = 6 if args.quick else POPULATION_SWEEPS
        print(f"population scaling ({args.kinds[0]}, {sizes})", flush=True)
        results["population"] = population_part(args.kinds[0], sizes, sweeps, log)
    if "memory" in args.parts:
        print(f"memory over {MEMORY_ROUNDS} rounds", flush=True)
        results["memory"] = memory_part(log)
    results["load_end"] = load_average()
    wall = time.perf_counter() - started
    log({"part": "end", "load": results["load_end"], "wall_s": wall})
    raw.close()
    plot(results, args.out / f"{stem}.png", args.kinds[0])
    report = write_report(results, args, stem, wall)
    (args.out / f"{stem}.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
