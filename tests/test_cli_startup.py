"""What the CLI loads and prints before any work: file-reading commands without TensorFlow, runs without its noise.

Each check runs the CLI in a fresh Python process, since what a process has
imported (and what TensorFlow's C++ runtime writes to file descriptor 2)
cannot be observed from inside pytest, where TensorFlow is already loaded.
No timing is asserted here (timings live in benchmarks/); importing nothing
heavy is what makes these commands start in well under a second.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.experiment.conftest import TINY_CONFIG

REPO = Path(__file__).resolve().parents[1]

# A run directory written by hand: two rounds with a privacy record, as the
# round loop writes them (only the keys the readers use).
_PRIVACY = {"epsilon": 1.5, "delta": 1e-5, "rounds": 2, "accountant": "rdp", "mechanism": "dp_fedavg",
            "sampling": "poisson", "rate": 0.1, "population_size": 100, "cohort_size": None,
            "epoch_rounds": None, "relation": "add/remove", "noise_multiplier": 1.0, "clip": 0.5}
_RECORDS = [{"round": r, "round_time_s": 0.5, "train": {"loss": 1.0 / r, "accuracy": 0.5 + r / 10},
             "eval": {"accuracy": 0.4 + r / 10}, "privacy": {**_PRIVACY, "rounds": r}} for r in (1, 2)]

_NO_TENSORFLOW = """\
import sys
from fedsim.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("tensorflow", "keras", "dp_accounting") if m in sys.modules)
print("EXIT", code, "HEAVY", heavy)
"""


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('[[aggregator]]\nname = "dp_fedavg"\n', encoding="utf-8")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _RECORDS), encoding="utf-8")
    return run


def _cli_in_fresh_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TENSORFLOW, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", [
    ["plot", "{run}", "--metric", "train/loss", "--out", "{tmp}/loss.png"],
    ["compare", "{run}", "--target", "eval/accuracy=0.55"],
    ["privacy", "{run}"],
])
def test_file_commands_run_without_tensorflow(run_dir, tmp_path, command):
    args = [a.format(run=run_dir, tmp=tmp_path) for a in command]
    result = _cli_in_fresh_process(*args)
    assert result.stdout.splitlines()[-1] == "EXIT 0 HEAVY []", result.stderr
    assert result.stderr == ""


def test_file_commands_report_their_errors_without_tensorflow(tmp_path):
    for args in (["compare", str(tmp_path)], ["plot", str(tmp_path)], ["privacy", str(tmp_path)]):
        result = _cli_in_fresh_process(*args)
        assert result.stdout.splitlines()[-1] == "EXIT 2 HEAVY []"
        assert result.stderr == f"fedsim: error: {str(tmp_path)!r} is not a run directory (no metrics.jsonl)\n"


def test_compare_reads_the_hand_written_records(run_dir):
    result = _cli_in_fresh_process("compare", str(run_dir), "--target", "eval/accuracy=0.55")
    # eval/accuracy: 0.5 at round 1, 0.6 at round 2 -> target reached at round 2, after 1.0 s.
    assert "| 0.6000 | 0.6000 | 2 | 1.0 |" in result.stdout


def test_run_prints_no_tensorflow_start_up_lines(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG.replace("rounds = 4", "rounds = 1"), encoding="utf-8")
    # The user's environment, not the test suite's: TF_CPP_MIN_LOG_LEVEL unset, as in a shell.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(config), "--out", str(tmp_path / "run"), "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    noisy = [line for line in result.stderr.splitlines()
             if any(word in line.lower() for word in ("cuinit", "cuda", "onednn", "absl"))]
    assert noisy == [], result.stderr
    assert "rounds:        1" in result.stdout


# Config problems that need neither data nor a model: each found before TensorFlow is imported.
_EARLY_PROBLEMS = {
    "cohort larger than the population": (
        TINY_CONFIG.replace("cohort_size = 3", "cohort_size = 7"),
        "sampler.cohort_size=7 is larger than the population of 6 train clients (data.num_devices)"),
    "cohort larger than a --set population": (
        TINY_CONFIG, "sampler.cohort_size=3 is larger than the population of 2 train clients"),
    "missing arrays file": (
        TINY_CONFIG.replace('name = "synthetic"\nnum_devices = 6', 'name = "arrays"\npath = "absent.npz"'),
        "data.path='absent.npz': no such file"),
    "missing LEAF directory": (
        TINY_CONFIG.replace('name = "synthetic"\nnum_devices = 6',
                            'name = "leaf"\ntrain_dir = "nowhere/train"\ntest_dir = "nowhere/test"\nnum_classes = 2'),
        "data.train_dir='nowhere/train': no such directory or file"),
    "missing EMNIST cache": (
        TINY_CONFIG.replace('name = "synthetic"\nnum_devices = 6', 'name = "emnist"\ncache_dir = "no_cache_here"'),
        "data.name='emnist': neither emnist_all.sqlite nor emnist_all.sqlite.lzma is in 'no_cache_here'"),
    "a standard-library model function": (
        TINY_CONFIG.replace('name = "logreg"', 'name = "custom"\nfunction = "os:system"'),
        "model.function='os:system' calls into 'os'"),
    "unknown custom module": (
        TINY_CONFIG.replace('name = "logreg"', 'name = "custom"\nfunction = "no_such_models:build"'),
        "model.function='no_such_models:build': no module 'no_such_models'"),
}


@pytest.mark.parametrize("problem", sorted(_EARLY_PROBLEMS))
def test_config_problems_are_reported_before_tensorflow_starts(tmp_path, problem):
    text, message = _EARLY_PROBLEMS[problem]
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    overrides = ["--set", "data.num_devices=2"] if "--set" in problem else []
    result = _cli_in_fresh_process("run", str(config), "--out", str(tmp_path / "run"), "--quiet", *overrides)
    assert result.stdout.splitlines()[-1] == "EXIT 2 HEAVY []", result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing made: the same --out works once the config is fixed


def test_sweep_checks_its_config_before_tensorflow_starts(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(TINY_CONFIG.replace("cohort_size = 3", "cohort_size = 7"), encoding="utf-8")
    result = _cli_in_fresh_process("sweep", str(config), "--grid", "seed=1,2", "--out", str(tmp_path / "sweep"))
    assert result.stdout.splitlines()[-1] == "EXIT 2 HEAVY []", result.stderr
    assert "sampler.cohort_size=7 is larger than the population of 6" in result.stderr
    assert not (tmp_path / "sweep").exists()
