"""One process per run directory (issue 18, item 1): real processes, real ``flock``."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsim.checkpoint import list_checkpoints
from fedsim.cli import main
from fedsim.experiment import EXPECTED_ERRORS
from fedsim.experiment.lock import LOCK_NAME, RunDirectoryLocked, RunDirectoryUnwritable, lock_run_dir
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]

# Holds the lock of argv[1] until killed.
HOLDER = "import sys, time\nfrom fedsim.experiment.lock import lock_run_dir\nwith lock_run_dir(sys.argv[1]):\n" \
         "    print('locked', flush=True)\n    time.sleep(600)\n"


def _rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _fedsim(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "fedsim.cli", *args, "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_the_lock_is_exclusive_names_its_holder_and_leaves_no_file(tmp_path):
    assert issubclass(RunDirectoryLocked, EXPECTED_ERRORS)  # exit code 2 through the CLI
    with lock_run_dir(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(RunDirectoryLocked, match=rf"in use by another fedsim process \(pid {os.getpid()}"):
            with lock_run_dir(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()
    with lock_run_dir(tmp_path):  # released: free again
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryLocked, match=rf"pid {holder.pid}\b"):
            with lock_run_dir(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays behind; the lock does not
    with lock_run_dir(tmp_path):
        pass


def test_two_resumes_of_one_directory_one_wins_and_every_round_is_written_once(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet", "--set", "rounds=2",
                 "--set", "evaluation.every=0"]) == 0
    # Both ask for far more rounds than run before the loser reaches the lock; the winner is then stopped.
    processes = [_fedsim(["resume", str(run_dir), "--rounds", "2000"]) for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while all(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        [loser] = [p for p in processes if p.poll() is not None]
        [winner] = [p for p in processes if p is not loser]
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        assert f"in use by another fedsim process (pid {winner.pid}" in err and "Traceback" not in err
        while not (run_dir / "metrics.jsonl").exists() or len(_rounds(run_dir)) < 4:
            assert winner.poll() is None
            time.sleep(0.1)
        winner.send_signal(signal.SIGINT)
        _, err = winner.communicate(timeout=120)
        assert winner.returncode == 130, err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    done = _rounds(run_dir)
    assert done == list(range(1, len(done) + 1)) and len(done) >= 4
    assert not (run_dir / LOCK_NAME).exists()


def test_a_resume_killed_by_sigkill_leaves_the_directory_usable(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet", "--set", "rounds=2"]) == 0
    process = _fedsim(["resume", str(run_dir), "--rounds", "2000"])
    deadline = time.monotonic() + 300
    while len(_rounds(run_dir)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    newest = max(r for r, _ in list_checkpoints(run_dir / "checkpoints"))
    assert main(["resume", str(run_dir), "--quiet", "--rounds", str(newest + 2)]) == 0
    assert _rounds(run_dir) == list(range(1, newest + 3))


def test_a_lock_file_that_cannot_be_created_is_a_named_error(tmp_path, monkeypatch):
    # A read-only directory (simulated: chmod does not stop root) or a full disk.
    real_open = os.open

    def refused(path, flags, *args, **kwargs):
        if Path(path) == tmp_path / LOCK_NAME:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    assert issubclass(RunDirectoryUnwritable, EXPECTED_ERRORS)
    with pytest.raises(RunDirectoryUnwritable, match=rf"cannot create the lock file '{tmp_path / LOCK_NAME}': "
                                                     "Permission denied; .*check its permissions"):
        with lock_run_dir(tmp_path):
            pass
