"""Kill and resume (issue 18): a run stopped by SIGKILL or SIGTERM at seeded random points, during
checkpoint writes included, and continued with ``fedsim resume`` until done, ends where an
uninterrupted run of the same config ends.

For FedAvg with shuffling, SCAFFOLD (per-client state in the run directory) and a DP chain
(zeroing, then dp_fedavg's noise), each as a ``fedsim`` subprocess, the final checkpoint's
arrays (and SCAFFOLD's client store) are bit-identical to the reference's, ``metrics.jsonl``
holds every round once with the reference's records, and TensorBoard every step once.

Every kill lands after the first checkpoint (every round is checkpointed): a run killed
between its first record and its first checkpoint has nothing ``fedsim resume`` can continue
from, and ``fedsim run`` refuses its ``--out`` (a metrics record exists) without ``--overwrite``.
A kill "during a checkpoint write" freezes the process (SIGSTOP) once a
``.tmp-round-*`` directory appears and signals it only if the directory is still there while
it is frozen: the write is then provably unfinished.
"""
from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 10
TIMEOUT_S = 300  # per process; only reached when something hangs

TABLES = """\
[data]
name = "synthetic"
num_devices = 6
[model]
name = "logreg"
[sampler]
cohort_size = 3
[checkpoint]
every = 1
keep = 2
"""
CONFIGS = {
    # The shuffle is seeded per (seed, round, client): a resumed round must draw the same order.
    # Only this run evaluates (rounds 4, 8, 10): tracing the evaluation costs each process seconds.
    "fedavg": 'seed = 5\n' + TABLES + '[client]\nshuffle_buffer = 50\n[evaluation]\nevery = 4\n',
    # Control variates live in RUN_DIR/client_state, versioned by round.
    "scaffold": ('seed = 7\nexecutor = "sequential"\n' + TABLES + '[algorithm]\nname = "scaffold"\n'
                 '[client]\nshuffle_buffer = 50\n[evaluation]\nevery = 0\n'),
    # Seeded noise in the aggregator state: a resumed round must add the same noise.
    "dp": ('seed = 11\nexecutor = "sequential"\n' + TABLES + '[evaluation]\nevery = 0\n'
           '[[aggregator]]\nname = "zeroing"\nnorm_bound = 100.0\n'
           '[[aggregator]]\nname = "dp_fedavg"\nclip_norm = 0.5\nnoise_multiplier = 1.1\n'),
}


@attrs.frozen
class Kill:
    signum: signal.Signals
    during_checkpoint: bool  # else: a random moment after a round's record
    round_num: int  # the kill lands in or after this round
    delay_s: float = 0.0


def kill_plan(seed: int, *kills: tuple[signal.Signals, bool]) -> list[Kill]:
    """``(signal, during_checkpoint)`` kills at seeded random rounds: in ``fedsim run``, then in each resume."""
    rng = random.Random(seed)
    # Round 1's checkpoint exists before the first kill; each later one lands past the rounds the last run reached.
    rounds = [rng.randint(2, 3)]
    rounds += [rng.randint(rounds[-1] + 3, ROUNDS - 4) for _ in kills[1:]]
    # A short delay: the run must still be going (four rounds and their checkpoints remain).
    return [Kill(signum, checkpoint, round_num, 0.0 if checkpoint else rng.uniform(0.0, 0.05))
            for (signum, checkpoint), round_num in zip(kills, rounds)]


# Each signal at both kinds of point, SIGKILL during a write in a first run and in a resumed one.
# A subprocess costs about 10 s of CPU (TensorFlow's import, tracing), so the kills are few.
SCENARIOS = {
    "fedavg": kill_plan(1, (signal.SIGTERM, False), (signal.SIGKILL, True)),
    "scaffold": kill_plan(2, (signal.SIGKILL, False), (signal.SIGTERM, True)),
    "dp": kill_plan(3, (signal.SIGKILL, True)),
}


class Fedsim:
    """One ``fedsim`` subprocess, its output kept in files for failure messages."""

    def __init__(self, args: list[str], logs: Path):
        logs.mkdir(parents=True, exist_ok=True)
        self.args = args
        self._out, self._err = open(logs / "stdout", "w"), open(logs / "stderr", "w")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen([sys.executable, "-m", "fedsim.cli", *args, "--quiet"], cwd=REPO,
                                        env=env, stdout=self._out, stderr=self._err)
        self._logs = logs

    def output(self) -> str:
        for log in (self._out, self._err):
            if not log.closed:
                log.flush()
        return (f"fedsim {' '.join(self.args)} (exit {self.process.returncode}):\n"
                f"stdout:\n{(self._logs / 'stdout').read_text()}\nstderr:\n{(self._logs / 'stderr').read_text()}")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self) -> int:
        try:
            code = self.process.wait(timeout=TIMEOUT_S)
        finally:
            for log in (self._out, self._err):
                log.close()
        return code


def last_round(metrics: Path) -> int:
    """The newest complete record's round in ``metrics`` (0 when none)."""
    try:
        lines = metrics.read_bytes().split(b"\n")[:-1]  # the last piece is "" or a line being written
    except FileNotFoundError:
        return 0
    return json.loads(lines[-1])["round"] if lines else 0


_TEMPORARY = re.compile(r"^\.tmp-round-(\d+)-(\d+)$")


def temporary_checkpoints(checkpoints: Path, from_round: int, pid: int) -> list[Path]:
    """``pid``'s checkpoints being written (a killed writer's leftovers name another pid)."""
    try:
        names = os.listdir(checkpoints)
    except FileNotFoundError:
        return []
    return [checkpoints / n for n in names
            if (m := _TEMPORARY.match(n)) and int(m.group(1)) >= from_round and int(m.group(2)) == pid]


def freeze(process: subprocess.Popen) -> None:
    """SIGSTOP, returning once the process is stopped (the signal takes effect asynchronously)."""
    process.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{process.pid}/stat")
    # The state follows the command name, which is in parentheses.
    while process.poll() is None and stat.read_text().rpartition(")")[2].split()[0] not in "Tt":
        time.sleep(0.0001)


def deliver(run: Fedsim, kill: Kill, run_dir: Path) -> str:
    """Sends ``kill``'s signal at its point; returns where it landed."""
    metrics = run_dir / "metrics.jsonl"
    # Coarse polling up to the round before: fast polling would take a core from the run itself.
    wait_until(run, lambda: last_round(metrics) >= kill.round_num - 1, 0.02, kill)
    if not kill.during_checkpoint:
        wait_until(run, lambda: last_round(metrics) >= kill.round_num, 0.005, kill)
        time.sleep(kill.delay_s)
        landed = last_round(metrics)
        run.process.send_signal(kill.signum)
        return f"{kill.signum.name} {kill.delay_s:.3f} s after round {kill.round_num}'s record (at round {landed})"
    landed = []

    def frozen_mid_write() -> bool:
        for temporary in temporary_checkpoints(run_dir / "checkpoints", kill.round_num, run.process.pid):
            freeze(run.process)
            if temporary.is_dir():  # frozen before the rename: the write is unfinished
                landed.append(temporary.name)
                return True
            run.process.send_signal(signal.SIGCONT)
        return False

    wait_until(run, frozen_mid_write, 0.0005, kill)
    run.process.send_signal(kill.signum)
    run.process.send_signal(signal.SIGCONT)  # SIGTERM's handler runs once the process continues
    return f"{kill.signum.name} during the write of {landed[0]}"


def wait_until(run: Fedsim, condition, poll_s: float, kill: Kill) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if not run.running() or time.monotonic() > deadline:
            raise AssertionError(f"the run ended or hung before {kill} could land:\n{run.output()}")
        time.sleep(poll_s)


def events(log_dir: Path) -> list[tuple[str, int, float]]:
    """``(tag, step, value)`` of every scalar in every event file of ``log_dir``."""
    import tensorflow as tf

    found = []
    for path in sorted(log_dir.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.append((value.tag, event.step, float(tf.make_ndarray(value.tensor))))
    return found


def arrays_of(npz: Path) -> dict[str, np.ndarray]:
    with np.load(npz, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def assert_same_arrays(actual: Path, expected: Path, context: str) -> None:
    got, want = arrays_of(actual), arrays_of(expected)
    assert got.keys() == want.keys(), context
    for key in want:
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), (
            f"{actual}: {key} differs from the uninterrupted run's\n{context}")


def client_states(run_dir: Path) -> dict[str, Path]:
    """SCAFFOLD's client store: every stored version (``shard/client/rN.npz``) by relative path."""
    store = run_dir / "client_state"
    return {str(p.relative_to(store)): p for p in store.glob("*/*/r*.npz")} if store.is_dir() else {}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, name):
    config = tmp_path / f"{name}.toml"
    config.write_text(f"rounds = {ROUNDS}\n" + CONFIGS[name], encoding="utf-8")
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    # The reference runs beside the killed runs: the test waits on their progress, never on the clock.
    reference = Fedsim(["run", str(config), "--out", str(reference_dir)], tmp_path / "logs" / "reference")
    run = Fedsim(["run", str(config), "--out", str(run_dir)], tmp_path / "logs" / "run")
    history = []
    for number, kill in enumerate(SCENARIOS[name]):
        history.append(deliver(run, kill, run_dir))
        code = run.wait()
        expected = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 128 + signal.SIGTERM}[kill.signum]
        assert code == expected, f"{history}\n{run.output()}"
        run = Fedsim(["resume", str(run_dir)], tmp_path / "logs" / f"resume{number}")
    assert run.wait() == 0, f"{history}\n{run.output()}"
    assert reference.wait() == 0, reference.output()
    context = f"kills: {history}\n{run.output()}"

    final = f"checkpoints/round-{ROUNDS:06d}"
    assert_same_arrays(run_dir / final / "arrays.npz", reference_dir / final / "arrays.npz", context)

    def header(directory: Path) -> dict:
        # arrays_sha256 hashes the .npz file, whose zip members carry the time they were written.
        document = json.loads((directory / final / "state.json").read_text())
        del document["arrays_sha256"]
        return document

    assert header(run_dir) == header(reference_dir), context
    # Equal listings: no .tmp-round-* left by a killed writer either.
    assert sorted(os.listdir(run_dir / "checkpoints")) == sorted(os.listdir(reference_dir / "checkpoints")), context

    stored, reference_stored = client_states(run_dir), client_states(reference_dir)
    assert stored.keys() == reference_stored.keys(), context
    assert (name == "scaffold") == bool(stored)
    assert not list(run_dir.glob("client_state/*/*/*.partial")), context
    for relative, path in stored.items():
        assert_same_arrays(path, reference_stored[relative], context)

    def records(directory: Path) -> list[dict]:
        lines = (directory / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "round_time_s"} for line in lines]

    kept = records(run_dir)
    assert [r["round"] for r in kept] == list(range(1, ROUNDS + 1)), context
    assert kept == records(reference_dir), context

    scalars, reference_scalars = events(run_dir / "tensorboard"), events(reference_dir / "tensorboard")
    twice = [key for key, n in collections.Counter((tag, step) for tag, step, _ in scalars).items() if n > 1]
    assert not twice, f"steps written more than once: {twice}\n{context}"

    def by_step(found):  # round_time_s is a wall time: its steps must match, not its values
        return {(tag, step): None if tag == "round_time_s" else value for tag, step, value in found}

    assert by_step(scalars) == by_step(reference_scalars), context
    assert {step for tag, step, _ in scalars if tag == "train/loss"} == set(range(1, ROUNDS + 1)), context
