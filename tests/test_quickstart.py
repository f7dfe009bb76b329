"""The README's quick start: `fedsim run configs/quickstart.toml` learns far beyond the majority class."""
import json
from pathlib import Path

import numpy as np

from fedsim.cli import main
from fedsim.datasets import load_synthetic
from fedsim.experiment import load_config

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_run_learns_and_writes_its_run_directory(tmp_path, capsys):
    config = load_config(REPO / "configs" / "quickstart.toml")
    assert main(["run", str(REPO / "configs" / "quickstart.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0

    run_dir = tmp_path / "run"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == list(range(1, config.rounds + 1))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == config.rounds
    assert (run_dir / "config.toml").exists()

    _, test = load_synthetic(config.data.alpha, config.data.beta, seed=config.seed)
    labels = np.concatenate([[int(y) for _, y in test.create_tf_dataset_for_client(c)] for c in test.client_ids])
    majority_rate = np.bincount(labels).max() / len(labels)
    accuracy = summary["final_eval"]["accuracy"]
    assert accuracy > majority_rate + 0.3, (accuracy, majority_rate)
    printed = capsys.readouterr().out
    assert "test accuracy:" in printed and "rounds:        100" in printed
