"""Running an experiment into a run directory.

A run directory holds ``config.toml`` (the fully resolved config),
``metrics.jsonl`` (one JSON line per round, flushed as written) and
``summary.json`` (written when the run ends).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Optional

from fedsim.experiment.blocks import RunConfig
from fedsim.experiment.build import build_experiment
from fedsim.experiment.config import config_to_toml
from fedsim.simulation import simulate

logger = logging.getLogger(__name__)


class RunDirectoryError(ValueError):
    """Raised when a run directory cannot be used (e.g. it already holds a run)."""


def default_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{config.algorithm.name}-{config.model.name}-seed{config.seed}"


def prepare_run_dir(run_dir: Path) -> Path:
    if (run_dir / "metrics.jsonl").exists():
        raise RunDirectoryError(
            f"{str(run_dir)!r} already holds a run (metrics.jsonl exists); choose another --out "
            "so its metrics are not mixed with a new run's"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_experiment(config: RunConfig, run_dir: Optional[str | Path] = None, progress: bool = True) -> dict:
    """Runs ``config`` and returns its summary (also written to ``summary.json``)."""
    run_dir = prepare_run_dir(Path(run_dir) if run_dir else default_run_dir(config))
    (run_dir / "config.toml").write_text(config_to_toml(config), encoding="utf-8")
    experiment = build_experiment(config)
    start = time.perf_counter()
    result = simulate(
        experiment.process,
        experiment.train_data,
        rounds=config.rounds,
        sampler=experiment.sampler,
        eval_data=experiment.test_data,
        eval_every=config.evaluation.every,
        metrics_path=run_dir / "metrics.jsonl",
        progress=progress,
    )
    summary = summarize(result.history, time.perf_counter() - start)
    summary["run_dir"] = str(run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def summarize(history: list[dict], wall_time_s: float) -> dict:
    """Rounds run, last train metrics, last evaluation metrics and wall time."""
    last = history[-1] if history else {"train": {}}
    evaluations = [r["eval"] for r in history if "eval" in r]
    return {
        "rounds": len(history),
        "final_train": last["train"],
        "final_eval": evaluations[-1] if evaluations else {},
        "wall_time_s": wall_time_s,
    }
