"""An interrupted ``fedsim sweep`` continues (issue 18, item 8): finished runs kept, the interrupted one resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedsim.cli import main
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]


def _rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_an_interrupted_sweep_continues_and_writes_results(tmp_path, tiny_config):  # noqa: F811
    out = tmp_path / "sweep"
    # Point 0 runs 2 rounds; point 1 runs 12, long enough to be interrupted in the middle.
    args = ["sweep", str(tiny_config), "--grid", "rounds=2,12", "--out", str(out), "--quiet",
            "--set", "checkpoint.every=1", "--set", "evaluation.every=0", "--set", "logging.tensorboard=false"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "fedsim.cli", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    second = out / "point001-seed3" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (second.exists() and len(second.read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before the interrupt"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "sweep interrupted in point001-seed3" in err and f"--out {out}" in err
    assert not (out / "results.md").exists()
    first_metrics = (out / "point000-seed3" / "metrics.jsonl").read_bytes()

    assert main(args) == 0
    assert (out / "point000-seed3" / "metrics.jsonl").read_bytes() == first_metrics  # not run again
    assert _rounds(out / "point001-seed3") == list(range(1, 13))
    rows = json.loads((out / "results.json").read_text())
    assert [r["point"] for r in rows] == [{"rounds": "2"}, {"rounds": "12"}]
    summary = json.loads((out / "point001-seed3" / "summary.json").read_text())
    assert rows[1]["final_train.loss"]["mean"] == summary["final_train"]["loss"]
    assert (out / "results.md").read_text().count("\n") == 4


def test_a_sweep_directory_of_another_config_is_refused_with_a_diff(tmp_path, tiny_config, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny_config), "--grid", "seed=3", "--out", str(out), "--quiet", "--set", "rounds=2",
            "--set", "evaluation.every=0", "--set", "logging.tensorboard=false"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--set", "client.batch_size=20"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another config than this sweep's" in err and "+batch_size = 20" in err
