"""Reading finished (or running) runs back: metric curves, comparison tables, plots."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import attrs

from fedsim.experiment.metrics_file import read_metrics

DEFAULT_METRICS = ("train/loss", "train/accuracy", "eval/loss", "eval/accuracy")


class ReportError(ValueError):
    """A run directory or metric that cannot be reported on."""


@attrs.frozen
class Target:
    """``metric`` reaching ``value`` (at most for losses, at least for anything else)."""

    metric: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Target":
        name, sep, value = text.partition("=")
        try:
            return cls(name.strip(), float(value))
        except ValueError:
            raise ReportError(f"--target {text!r}: expected NAME=NUMBER, e.g. eval/accuracy=0.8") from None


def lower_is_better(metric: str) -> bool:
    return "loss" in metric


def load_history(run_dir: str | Path) -> list[dict]:
    """The metrics records of a run directory."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ReportError(f"{str(run_dir)!r} is not a run directory (no metrics.jsonl)")
    return read_metrics(path)


def curve(history: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """``(rounds, values)`` of ``metric``: ``section/name`` (e.g. ``eval/accuracy``) or a bare train metric."""
    section, _, name = metric.rpartition("/")
    section = section or "train"
    points = [(r["round"], r[section][name]) for r in history if name in (r.get(section) or {})]
    return [p[0] for p in points], [float(p[1]) for p in points]


def compare_table(run_dirs: Sequence[str | Path], targets: Sequence[Target] = ()) -> str:
    """A markdown table: per run its rounds, final and best metrics, wall time, and time to each target."""
    histories = {str(d): load_history(d) for d in run_dirs}
    metrics = [m for m in DEFAULT_METRICS if any(curve(h, m)[0] for h in histories.values())]
    header = ["run", "rounds", "wall time (s)"]
    header += [f"{kind} {m}" for m in metrics for kind in ("final", "best")]
    for target in targets:
        sign = "<=" if lower_is_better(target.metric) else ">="
        header += [f"rounds to {target.metric} {sign} {target.value:g}", "seconds to it"]
    rows = []
    for run_dir, history in histories.items():
        row = [run_dir, str(len(history)), f"{_wall_time(history):.1f}"]
        for metric in metrics:
            _, values = curve(history, metric)
            best = (min if lower_is_better(metric) else max)(values) if values else None
            row += [_number(values[-1] if values else None), _number(best)]
        for target in targets:
            reached = _rounds_to(history, target)
            row += ["not reached", "-"] if reached is None else [
                str(reached), f"{_wall_time([r for r in history if r['round'] <= reached]):.1f}"]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _rounds_to(history: list[dict], target: Target) -> Optional[int]:
    rounds, values = curve(history, target.metric)
    for round_num, value in zip(rounds, values):
        if (value <= target.value) if lower_is_better(target.metric) else (value >= target.value):
            return round_num
    return None


def _wall_time(history: list[dict]) -> float:
    return sum(r.get("round_time_s", 0.0) for r in history)


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def plot_runs(
    run_dirs: Sequence[str | Path], metric: str, out: str | Path, size: tuple[int, int] = (800, 500)
) -> Path:
    """One curve of ``metric`` per run on a single figure, saved as a ``size``-pixel PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed, and no GUI event loop
    from matplotlib import pyplot as plt

    dpi = 100
    figure, axes = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    try:
        plotted = 0
        for run_dir in run_dirs:
            rounds, values = curve(load_history(run_dir), metric)
            if rounds:
                axes.plot(rounds, values, marker="." if len(rounds) < 30 else None, label=Path(run_dir).name)
                plotted += 1
        if not plotted:
            raise ReportError(f"no run records metric {metric!r}; try e.g. {', '.join(DEFAULT_METRICS)}")
        axes.set_xlabel("round")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        out = Path(out)
        figure.savefig(out, dpi=dpi)
    finally:
        plt.close(figure)
    return out
