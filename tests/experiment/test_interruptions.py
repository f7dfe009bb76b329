"""A run survives SIGINT, SIGKILL (twice) and a full disk, and its metrics hold every round once."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fedsim.checkpoint.store as checkpoint_store
from fedsim.checkpoint import list_checkpoints, load_checkpoint
from fedsim.cli import main
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]


def _rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "fedsim.cli", *args, "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before the test could interrupt it"


def test_sigint_writes_a_final_checkpoint_and_metrics_then_resume_finishes(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"
    process = _start(["run", str(tiny_config), "--out", str(run_dir), "--set", "rounds=100",
                      "--set", "checkpoint.every=0", "--set", "evaluation.every=0"])
    _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    done = _rounds(run_dir)
    assert done == list(range(1, len(done) + 1)) and len(done) < 100
    assert f"interrupted after round {done[-1]} of 100" in stderr and "fedsim resume" in stderr
    assert [r for r, _ in list_checkpoints(run_dir / "checkpoints")] == [done[-1]]
    assert json.loads((run_dir / "summary.json").read_text())["interrupted"] is True

    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert _rounds(run_dir) == list(range(1, 101))
    assert json.loads((run_dir / "summary.json").read_text())["interrupted"] is False


def test_metrics_hold_every_round_once_after_two_kill_and_resume_cycles(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    settings = ["--set", "rounds=30", "--set", "checkpoint.keep=3"]
    process = _start(["run", str(tiny_config), "--out", str(run_dir), *settings])
    _wait_for(lambda: any(r >= 4 for r, _ in list_checkpoints(checkpoints)), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first_kill = max(r for r, _ in list_checkpoints(checkpoints))

    process = _start(["resume", str(run_dir)])
    _wait_for(lambda: any(r >= first_kill + 4 for r, _ in list_checkpoints(checkpoints)), process)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert _rounds(run_dir) == list(range(1, 31))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint_and_stops_clearly(
        tmp_path, tiny_config, monkeypatch, capsys):  # noqa: F811
    real_savez = np.savez
    rounds_written = []

    def savez_on_a_disk_that_fills_up(handle, **arrays):
        rounds_written.append(len(rounds_written) + 1)
        if len(rounds_written) >= 2:  # the checkpoint of round 4 (every 2 rounds)
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(handle, **arrays)

    monkeypatch.setattr(checkpoint_store.np, "savez", savez_on_a_disk_that_fills_up)
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet", "--set", "rounds=8"]) == 2
    err = capsys.readouterr().err
    assert "could not write the checkpoint of round 4" in err and "No space left on device" in err
    assert "the newest intact checkpoint is round 2" in err and "fedsim resume" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["round-000002"]
    restored = load_checkpoint(run_dir / "checkpoints" / "round-000002", _template(run_dir))
    assert restored.round_num == 2
    assert _rounds(run_dir) == [1, 2, 3, 4]  # nothing already measured is lost

    monkeypatch.setattr(checkpoint_store.np, "savez", real_savez)  # space freed
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert _rounds(run_dir) == list(range(1, 9))


def _template(run_dir: Path):
    from fedsim.experiment import build_experiment, load_config

    return {"server_state": build_experiment(load_config(run_dir / "config.toml")).process.initialize()}


def test_resuming_with_another_model_architecture_names_the_mismatched_variable(tmp_path, tiny_config, capsys):  # noqa: F811
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet", "--set", "rounds=2",
                 "--set", "model.name=mlp", "--set", "model.hidden=[7]"]) == 0
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace("hidden = [\n    7,\n]", "hidden = [9]").replace("rounds = 2", "rounds = 4"))
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no readable checkpoint" in err
    # Keras numbers layer names per process (dense, dense_1, ...): match the shape of the name.
    assert re.search(r"model_weights\.trainable\[0\] \(variable 'sequential(_\d+)?/dense(_\d+)?/kernel'\): "
                     r"checkpoint has float32 array of shape \[60, 7\], the run has float32 array of shape \[60, 9\]", err)

    config.write_text(config.read_text().replace('name = "mlp"\nhidden = [9]', 'name = "logreg"'))
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    assert re.search(r"this model's trainable variables: \['sequential(_\d+)?/dense(_\d+)?/kernel', "
                     r"'sequential(_\d+)?/dense(_\d+)?/bias'\]", capsys.readouterr().err)
