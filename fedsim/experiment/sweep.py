"""Sweeps: one run per grid point and seed, then a table of mean and std over seeds."""
from __future__ import annotations

import datetime as dt
import itertools
import json
import statistics
from pathlib import Path
from typing import Iterable, Optional, Sequence

from fedsim.experiment.config import ConfigError, load_config, parse_override
from fedsim.experiment.run import run_experiment

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
) -> Path:
    """Runs every grid point with seeds ``seed, seed+1, ...``; writes ``results.md`` and ``results.json``.

    Every config is validated before the first run starts, so a typo in the
    last grid value does not surface hours into the sweep.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least one seed")
    base_seed = load_config(config_path, overrides).seed
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    plan = []
    for index, point in enumerate(points):
        for offset in range(seeds):
            settings = [*overrides, *(f"{k}={v}" for k, v in point.items()), f"seed={base_seed + offset}"]
            plan.append((index, point, load_config(config_path, settings)))
    out = Path(out) if out else Path("runs") / f"sweep-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[int, list[dict]] = {i: [] for i in range(len(points))}
    for index, point, config in plan:
        run_dir = out / f"point{index:03d}-seed{config.seed}"
        summaries[index].append(run_experiment(config, run_dir, progress=progress))
        _free_models()
    rows = [_row(point, summaries[i]) for i, point in enumerate(points)]
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(results_table(rows), encoding="utf-8")
    return out


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
