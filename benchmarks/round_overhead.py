"""Where a FedAvg round's time goes: the executor's training call against the round around it.

Usage (run from a checkout's root, so two checkouts can be compared A B A B):
  python -m benchmarks.round_overhead --kind mlp [--ragged] [--rounds 80]

Prints one line: the median milliseconds per round of ``process.next``, of the
executor's ``train`` inside it, and of the rest (the round's own Python:
broadcast, messages, fault policy, aggregation, server update). The first 3
rounds (tracing) are left out. The workload is ``benchmarks.fedavg``'s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.fedavg import ReplayedCohorts, build_workload


def measure(kind: str, ragged: bool, rounds: int) -> tuple[float, float]:
    """Median seconds per round of ``next`` and of the executor's ``train``."""
    data, process = build_workload(kind, 20, ragged, "auto")
    train, spent = process.executor.train, []

    def timed_train(*args, **kwargs):
        start = time.perf_counter()
        result = train(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return result

    process.executor.train = timed_train
    cohorts, ids = ReplayedCohorts(len(data.client_ids), 10, rounds), data.client_ids
    state, totals = process.initialize(), []
    for round_num in range(1, rounds + 1):
        cohort = [ids[i] for i in cohorts.sample(round_num, len(ids))]
        datasets = [data.create_tf_dataset_for_client(i) for i in cohort]
        start = time.perf_counter()
        state = process.next(state, datasets, cohort).state
        totals.append(time.perf_counter() - start)
    return statistics.median(totals[3:]), statistics.median(spent[3:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["logreg", "mlp", "cnn"], required=True)
    parser.add_argument("--ragged", action="store_true")
    parser.add_argument("--rounds", type=int, default=80)
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error(f"--rounds={args.rounds}: need >= 5 (the first 3 include tracing)")
    total, train = measure(args.kind, args.ragged, args.rounds)
    print(f"{os.getcwd()} next {total * 1000:.2f} ms  train {train * 1000:.2f} ms  "
          f"outside {(total - train) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
