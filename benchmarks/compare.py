"""fedsim against peer simulators, side by side: runs alternate (A B A B) in one sitting.

Usage:
  python -m benchmarks.compare --peer pfl=/work/venvs/pfl/bin/python --peer tff=/work/venvs/tff/bin/python
         [--peer flower=PATH] [--kinds logreg mlp cnn] [--pairs 3] [--rounds 10] [--executor auto]
         [--intra-op-threads N] [--inter-op-threads N]

For every kind and population (equal, ragged) and each peer, runs fedsim then
the peer ``--pairs`` times, alternately, so that load from other processes on
the machine hits both alike. Prints one JSON line per comparison with both
medians (over the pairs, of each run's median s/round) and the ratio
fedsim/peer (below 1: fedsim is faster), then a Markdown table.

Beside each peer, fedsim's ratio to the floor: the round's counted FLOPs at
this machine's matmul peak (``benchmarks.floor``), computed once, before the
runs, in this process.

``--baseline DIR`` adds another fedsim checkout (e.g. ``git worktree add
/work/old COMMIT``) as the peer ``baseline``, run from its own folder on the
same workload: the ratio is then this tree's time over that commit's, the
A/B check that a change to the engine costs no speed.

Threads: by default every system runs at its own default (fedsim gives each
op ``cores // 2`` threads, see ``fedsim.runtime``; the peers' TensorFlow one
per core). ``--intra-op-threads``/``--inter-op-threads`` set the same value
for all of them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parents[2] / "shared" / "peers"
PEER_SCRIPTS = {"pfl": "pfl_fedavg.py", "tff": "tff_fedavg.py", "flower": "flower_fedavg.py", "raw_tf": "raw_tf.py"}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _last_json(stdout: str, command: list[str]) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line from {' '.join(command)}; its output ended with:\n{stdout[-2000:]}")


def run_json(command: list[str], env: dict = ENV, cwd=None) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return _last_json(result.stdout, command)


def fedsim_command(kind, ragged, rounds, cohort, batch, executor):
    command = [sys.executable, "-m", "benchmarks.fedavg", "--kind", kind, "--rounds", str(rounds),
               "--cohort", str(cohort), "--batch", str(batch), "--executor", executor]
    return command + (["--ragged"] if ragged else [])


def peer_command(peer, python, kind, ragged, rounds, cohort, batch):
    if peer == "baseline":  # another fedsim checkout, run from its folder (see --baseline)
        return fedsim_command(kind, ragged, rounds, cohort, batch, "auto") + ["--workload", str(PEERS_DIR / "workload.py")]
    if peer not in PEER_SCRIPTS:
        raise ValueError(f"unknown peer {peer!r}; choose from {sorted(PEER_SCRIPTS)}")
    command = [python, str(PEERS_DIR / PEER_SCRIPTS[peer]), kind, str(rounds), str(cohort), str(batch)]
    command += ["ragged"] if ragged else []
    # pfl under Keras 3 federates every layer only with path keys (see the peers' README).
    return command + (["--pathkeys"] if peer == "pfl" else [])


def compare(peers: dict, kinds, pairs, rounds, cohort, batch, executor, floors, env=ENV):
    """Rows of fedsim against each peer and against its floor (a row of ``benchmarks.floor.floors``)."""
    floor_s = {(r["kind"], r["population"]): r["floor_s"] for r in floors}
    rows = []
    for kind in kinds:
        for ragged in (False, True):
            for peer, python in peers.items():
                ours, theirs = [], []
                for _ in range(pairs):
                    ours.append(run_json(fedsim_command(kind, ragged, rounds, cohort, batch, executor), env)["round_s_median"])
                    cwd = python if peer == "baseline" else None  # the baseline's folder
                    theirs.append(run_json(peer_command(peer, python, kind, ragged, rounds, cohort, batch), env,
                                       cwd)["round_s_median"])
                row = {"kind": kind, "population": "ragged" if ragged else "equal", "peer": peer,
                       "fedsim_s": statistics.median(ours), "peer_s": statistics.median(theirs),
                       "fedsim_runs": ours, "peer_runs": theirs}
                row["ratio"] = row["fedsim_s"] / row["peer_s"]
                row["floor_s"] = floor_s[kind, row["population"]]
                row["fedsim_floor"] = row["fedsim_s"] / row["floor_s"]
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def markdown(rows, argv, peak) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, float32 matmul peak "
        f"{peak:.1f} GFLOP/s), command: `python -m benchmarks.compare {' '.join(argv)}`",
        "",
        "| kind | population | peer | fedsim s/round | peer s/round | fedsim/peer | floor s/round | fedsim/floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['population']} | {r['peer']} | {r['fedsim_s']:.4f} | "
                     f"{r['peer_s']:.4f} | {r['ratio']:.3f} | {r['floor_s']:.3g} | {r['fedsim_floor']:.3g} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PYTHON",
                        help="a peer and its venv's python, e.g. pfl=/work/venvs/pfl/bin/python")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another fedsim checkout to compare against, as the peer 'baseline'")
    parser.add_argument("--kinds", nargs="+", default=["logreg", "mlp", "cnn"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cohort", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--executor", default="auto")
    parser.add_argument("--intra-op-threads", type=int, metavar="N",
                        help="TF_NUM_INTRAOP_THREADS for every run, fedsim's and the peers' alike "
                             "(default: each system's own)")
    parser.add_argument("--inter-op-threads", type=int, metavar="N",
                        help="TF_NUM_INTEROP_THREADS for every run, fedsim's and the peers' alike")
    args = parser.parse_args(argv)
    env = dict(ENV)
    for flag, variable in (("intra_op_threads", "TF_NUM_INTRAOP_THREADS"), ("inter_op_threads", "TF_NUM_INTEROP_THREADS")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                parser.error(f"--{flag.replace('_', '-')}={value}: must be >= 1 (threads TensorFlow may use)")
            env[variable] = str(value)
            os.environ[variable] = str(value)  # the floor's TensorFlow, in this process, too
    peers = {}
    for item in args.peer:
        name, sep, python = item.partition("=")
        if not sep or not python:
            parser.error(f"--peer {item!r}: expected NAME=PYTHON, e.g. pfl=/work/venvs/pfl/bin/python")
        peers[name] = python
    if args.baseline:
        if not (Path(args.baseline) / "benchmarks" / "fedavg.py").is_file():
            parser.error(f"--baseline {args.baseline!r}: no benchmarks/fedavg.py there; give a fedsim checkout")
        peers["baseline"] = str(Path(args.baseline).resolve())
    if not peers:
        parser.error("give at least one --peer NAME=PYTHON or --baseline DIR")
    if args.pairs < 1:
        parser.error(f"--pairs={args.pairs}: need >= 1 (3 or more for a fair ratio)")
    # Imported only now: it starts TensorFlow here with fedsim's thread default, which
    # must not reach the peers (ENV and env were copied from the environment before).
    from benchmarks.floor import floors as count_floors

    floors = count_floors(args.kinds, args.rounds, args.cohort, args.batch)
    for floor in floors:
        print(json.dumps(floor), flush=True)
    rows = compare(peers, args.kinds, args.pairs, args.rounds, args.cohort, args.batch, args.executor, floors, env)
    print(markdown(rows, argv, floors[0]["peak_gflops"]))


if __name__ == "__main__":
    main()
