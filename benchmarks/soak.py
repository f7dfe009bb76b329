"""Soak: many FedAvg rounds of the shared ``mlp`` workload, watching resident memory.

A simulation that leaks a little every round (a retrace, a cached dataset, a
growing Python list) looks fine for 50 rounds and dies after a day. This runs
``--rounds`` rounds (default 2,000) through fedsim's public API on the peer
workload (``../shared/peers/workload.py``, as ``benchmarks.fedavg`` does) and
samples, every ``--every`` rounds, the process's resident set size
(``VmRSS``) and its peak (``VmHWM``) from ``/proc/self/status``.

    python -m benchmarks.soak [--rounds 2000] [--every 100] [--out benchmarks/results]

prints a table and writes ``soak.md`` and ``soak.png`` (RSS per round) into
``--out``. The growth figure compares the last sample with the first one, so
one-off start-up costs (tracing, allocator warm-up in round 1) are excluded,
and it separates out the per-round records that ``simulate`` keeps in
``SimulationResult.history`` (growth by design, not a leak).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from benchmarks.fedavg import DEFAULT_WORKLOAD, ReplayedCohorts, build_workload  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def read_memory_mb() -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of this process in MiB, from ``/proc/self/status`` (Linux)."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # the kernel reports kB
    return fields["VmRSS"], fields["VmHWM"]


def deep_sizeof(value) -> int:
    """Bytes held by a JSON-like value (dicts, lists, scalars), counting shared objects once."""
    seen: set[int] = set()

    def visit(node) -> int:
        if id(node) in seen:
            return 0
        seen.add(id(node))
        size = sys.getsizeof(node)
        if isinstance(node, dict):
            size += sum(visit(k) + visit(v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            size += sum(visit(item) for item in node)
        return size

    return visit(value)


def run(
    rounds: int,
    every: int,
    cohort: int = 10,
    batch: int = 20,
    executor: str = "auto",
    workload_path: Path = DEFAULT_WORKLOAD,
) -> list[dict]:
    """Runs the soak; one sample per ``every`` rounds (and after the last round)."""
    import fedsim

    data, process = build_workload("mlp", batch, ragged=False, executor=executor, workload_path=workload_path)
    samples: list[dict] = []
    # simulate keeps every round's record in SimulationResult.history: memory that
    # grows by design, measured here so it can be told apart from a leak.
    block = {"seconds": 0.0, "history_bytes": 0}

    def probe(state, record) -> None:
        block["seconds"] += record["round_time_s"]
        block["history_bytes"] += deep_sizeof(record)
        round_num = record["round"]
        if round_num % every and round_num != rounds:
            return
        rss, hwm = read_memory_mb()
        rounds_in_block = round_num - (samples[-1]["round"] if samples else 0)
        samples.append(
            {
                "round": round_num,
                "rss_mb": rss,
                "hwm_mb": hwm,
                "round_ms": 1000 * block["seconds"] / rounds_in_block,
                "loss": record["train"]["loss"],
                "history_mb": block["history_bytes"] / 2**20,
            }
        )
        block["seconds"] = 0.0

    rss_before, _ = read_memory_mb()
    fedsim.simulate(
        process,
        data,
        rounds,
        ReplayedCohorts(len(data.client_ids), cohort, rounds),
        progress=False,
        callbacks=[probe],
    )
    samples.insert(
        0,
        {
            "round": 0,
            "rss_mb": rss_before,
            "hwm_mb": None,
            "round_ms": None,
            "loss": None,
            "history_mb": 0.0,
        },
    )
    return samples


def render_table(samples: list[dict]) -> str:
    """The samples as a Markdown table."""

    def cell(value, fmt):
        return "" if value is None else format(value, fmt)

    lines = [
        "| round | RSS (MiB) | peak RSS (MiB) | history records (MiB) | ms/round (block mean) "
        "| train loss |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in samples:
        lines.append(
            f"| {s['round']} | {s['rss_mb']:.1f} | {cell(s['hwm_mb'], '.1f')} | "
            f"{s['history_mb']:.2f} | {cell(s['round_ms'], '.1f')} | {cell(s['loss'], '.4f')} |"
        )
    return "\n".join(lines)


def summarize(samples: list[dict]) -> str:
    """Growth from the first post-round sample to the last, total and per 1,000 rounds."""
    first, last = samples[1], samples[-1]
    growth = last["rss_mb"] - first["rss_mb"]
    unexplained = growth - (last["history_mb"] - first["history_mb"])
    span = last["round"] - first["round"]
    per_1000 = growth / span * 1000 if span else float("nan")
    return (
        f"RSS growth from round {first['round']} to {last['round']}: {growth:+.1f} MiB "
        f"({per_1000:+.2f} MiB per 1,000 rounds), of which {growth - unexplained:.1f} MiB are the "
        f"history records simulate keeps, leaving {unexplained:+.1f} MiB; "
        f"peak RSS {last['hwm_mb']:.1f} MiB; "
        f"RSS after imports and data, before round 1: {samples[0]['rss_mb']:.1f} MiB"
    )


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = samples[1:]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(
        [s["round"] for s in measured], [s["rss_mb"] for s in measured], marker="o", label="RSS"
    )
    axis.plot(
        [s["round"] for s in measured],
        [s["hwm_mb"] for s in measured],
        linestyle="--",
        label="peak RSS (VmHWM)",
    )
    axis.set_xlabel("round")
    axis.set_ylabel("MiB")
    axis.set_title("fedsim soak: FedAvg, mlp workload, cohort 10")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="sample memory every N rounds")
    parser.add_argument("--cohort", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--executor", default="auto")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="directory for soak.md and soak.png"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.every < 1:
        parser.error(f"--rounds={args.rounds} and --every={args.every} must both be >= 1")

    started = time.perf_counter()
    samples = run(args.rounds, args.every, args.cohort, args.batch, args.executor)
    wall = time.perf_counter() - started
    table, summary = render_table(samples), summarize(samples)
    print(table, summary, f"wall time {wall:.0f} s", sep="\n\n")

    args.out.mkdir(parents=True, exist_ok=True)
    plot(samples, args.out / "soak.png")
    (args.out / "soak.md").write_text(
        "# Soak: resident memory over a long run\n\n"
        f"FedAvg on the shared `mlp` workload (100 clients x 200 examples, 60 features), cohort "
        f"{args.cohort}, batch {args.batch}, executor `{args.executor}`, {args.rounds} rounds in one "
        f"process; wall time {wall:.0f} s on the 2-core development machine (shared). Produced by "
        f"`python -m benchmarks.soak --rounds {args.rounds} --every {args.every}`. RSS and peak RSS "
        "are `VmRSS` and `VmHWM` from `/proc/self/status`; round 0 is before the first round.\n\n"
        f"{table}\n\n{summary}.\n\n![RSS per round](soak.png)\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
