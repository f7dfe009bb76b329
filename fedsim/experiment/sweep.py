"""Sweeps: one run per grid point and seed, then a table of mean and std over seeds.

A sweep directory holds one run directory per point and seed
(``point000-seed3``) and, once every run has finished, ``results.md`` and
``results.json``. Running the same sweep again into the same ``--out``
continues it: finished runs are read back, interrupted ones resumed, the
rest run. A run directory of another config (the grid or base config
changed) is refused with a diff rather than mixed into the table.
"""
from __future__ import annotations

import datetime as dt
import difflib
import itertools
import json
import statistics
from pathlib import Path
from typing import Iterable, Optional, Sequence

from fedsim.checkpoint import CheckpointError
from fedsim.experiment import preflight
from fedsim.experiment.blocks import RunConfig
from fedsim.experiment.config import ConfigError, config_to_toml, load_config, parse_override
from fedsim.experiment.lock import RunDirectoryError, lock_run_dir
from fedsim.experiment.run import RunInterrupted, resume_run, run_experiment

RESULT_METRICS = ("final_eval.accuracy", "final_eval.loss", "final_train.loss", "wall_time_s")


def parse_grid(items: Iterable[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", ...]`` -> ``{"a.b": ["1", "2"]}``; commas inside ``[...]`` stay in their value."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values:
            raise ConfigError(f"--grid {item!r}: expected key.path=v1,v2,..., e.g. --grid client_optimizer.learning_rate=0.01,0.1")
        grid[key.strip()] = _split_values(values)
        for value in grid[key.strip()]:
            parse_override(f"{key}={value}")
    return grid


def _split_values(text: str) -> list[str]:
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    return values + [current]


def run_sweep(
    config_path: str | Path,
    grid: dict[str, list[str]],
    seeds: int = 1,
    out: Optional[str | Path] = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    allow_modules: Sequence[str] = (),
) -> Path:
    """Runs every grid point with seeds ``seed, seed+1, ...``; writes ``results.md`` and ``results.json``.

    Every config is validated and preflight-checked (``allow_modules`` as
    for :func:`~fedsim.experiment.run.run_experiment`) before the first run
    starts, so a typo in the last grid value does not surface hours into the
    sweep. The sweep directory is locked for the sweep's life (and each run's
    directory by its run); an existing ``out`` of the same sweep is continued.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least one seed")
    base_seed = load_config(config_path, overrides).seed
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    plan = []
    for index, point in enumerate(points):
        for offset in range(seeds):
            settings = [*overrides, *(f"{k}={v}" for k, v in point.items()), f"seed={base_seed + offset}"]
            config = load_config(config_path, settings)
            preflight.check_config(config, allow_modules)
            plan.append((index, point, config))
    out = Path(out) if out else Path("runs") / f"sweep-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[int, list[dict]] = {i: [] for i in range(len(points))}
    with lock_run_dir(out):
        for index, point, config in plan:
            run_dir = out / f"point{index:03d}-seed{config.seed}"
            try:
                summaries[index].append(_run_point(config, run_dir, progress, allow_modules))
            except RunInterrupted as interrupted:
                raise RunInterrupted(
                    f"sweep interrupted in {run_dir.name} after round {interrupted.round_num} of "
                    f"{config.rounds} ({interrupted.signal_name}); its checkpoint and metrics are written. "
                    f"Continue the sweep by running the same 'fedsim sweep' command with --out {out}: "
                    "finished runs are kept, this one resumes",
                    interrupted.exit_code - 128, interrupted.round_num) from None
            _free_models()
        rows = [_row(point, summaries[i]) for i, point in enumerate(points)]
        (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        (out / "results.md").write_text(results_table(rows), encoding="utf-8")
    return out


class SweepPointError(RunDirectoryError):
    """A sweep's run directory that cannot be continued as part of this sweep."""


def _run_point(config: RunConfig, run_dir: Path, progress: bool, allow_modules: Sequence[str]) -> dict:
    """The summary of one point's run: read back if finished, resumed if interrupted, else run.

    A point stopped before its first round is run again: ``run_experiment``
    takes over what such a run leaves (an empty ``metrics.jsonl`` included).
    """
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists() or (metrics.stat().st_size == 0 and not (run_dir / "checkpoints").exists()):
        return run_experiment(config, run_dir, progress=progress, allow_modules=allow_modules)
    expected, found = config_to_toml(config), _read(run_dir / "config.toml")
    if found != expected:
        diff = "\n".join(difflib.unified_diff((found or "").splitlines(), expected.splitlines(),
                                              f"{run_dir.name}/config.toml", "this sweep's config", lineterm="", n=1))
        raise SweepPointError(
            f"{str(run_dir)!r} holds a run of another config than this sweep's (the grid, --set or the base "
            f"config changed since it ran); give the sweep another --out, or undo the change. What changed:\n{diff}")
    summary = _finished_summary(run_dir, config)
    if summary is not None:
        print(f"fedsim: {run_dir.name} already finished; its results are reused")
        return summary
    try:
        # This sweep's own run (its config.toml is the one just checked): no --trust to ask for.
        return resume_run(run_dir, progress=progress, trust=True, allow_modules=allow_modules)
    except CheckpointError as error:
        raise SweepPointError(
            f"{run_dir.name} was interrupted and cannot be resumed ({error}); delete {run_dir} to run it again "
            "from round 1 (set checkpoint.every to make interrupted runs resumable), then rerun the sweep") from None


def _finished_summary(run_dir: Path, config: RunConfig) -> Optional[dict]:
    """``summary.json`` of a run that ran all its rounds, or None (interrupted, killed, or unreadable)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(summary, dict) and summary.get("interrupted") is False and summary.get("rounds") == config.rounds:
        return summary
    return None


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _free_models() -> None:
    # Each run builds a new Keras model; without this, a long sweep keeps every one alive.
    import keras

    keras.backend.clear_session()


def _row(point: dict[str, str], summaries: list[dict]) -> dict:
    row: dict = {"point": point, "seeds": len(summaries), "run_dirs": [s["run_dir"] for s in summaries]}
    for metric in RESULT_METRICS:
        values = [v for v in (_lookup(s, metric) for s in summaries) if v is not None]
        if values:
            row[metric] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return row


def _lookup(summary: dict, dotted: str) -> Optional[float]:
    value = summary
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def results_table(rows: list[dict]) -> str:
    """Markdown: one row per grid point, its seed count, and mean ± std (over seeds) of each metric."""
    keys = list(rows[0]["point"]) if rows else []
    metrics = [m for m in RESULT_METRICS if any(m in r for r in rows)]
    header = keys + ["seeds"] + [f"{m} (mean ± std)" for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["point"][k] for k in keys] + [str(row["seeds"])]
        cells += [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" if m in row else "-" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
