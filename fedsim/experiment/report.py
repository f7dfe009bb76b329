"""Reading finished (or running) runs back: metric curves, comparison tables, plots.

The metrics files read here may have been edited, damaged or written by
someone else, so nothing in them is trusted: a line that is not a record is
skipped and counted (``fedsim.experiment.metrics_file.read_records``), a
value that is not a number (a string such as ``"0.99"``, a boolean, a list,
an integer too large for a float) is skipped and counted, and each count is
logged as one warning line naming the file. Rounds that measured no examples
(no client trained, or an evaluation over no test examples) have no loss or
accuracy: they are shown as "no examples" and never reach a target, even in
files written before such rounds were recorded without them (a 0.0 there is
not a measurement).

This module imports no TensorFlow: the file-reading commands start without it.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import attrs

from fedsim.experiment.metrics_file import read_records

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("train/loss", "train/accuracy", "eval/loss", "eval/accuracy")
NO_EXAMPLES = "no examples"
# Counts are measured on no examples too (as 0): only the other metrics lack a value then.
COUNT_METRICS = ("num_examples", "num_batches")
# --size bounds: each side at least MIN_SIDE pixels (smaller leaves no room for the axes),
# at most MAX_SIDE, and at most MAX_PIXELS in all (the image is drawn in memory, 4 bytes a pixel).
MIN_SIDE = 50
MAX_SIDE = 10_000
MAX_PIXELS = 25_000_000


class ReportError(ValueError):
    """A run directory, metric, target or plot option that cannot be reported on."""


@attrs.frozen
class Target:
    """``metric`` reaching ``value`` (at most for losses, at least for anything else)."""

    metric: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Target":
        name, sep, value = text.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None or not math.isfinite(number):
            raise ReportError(
                f"--target {text!r}: expected NAME=NUMBER with a finite number, e.g. eval/accuracy=0.8"
            )
        return cls(name.strip(), number)


def lower_is_better(metric: str) -> bool:
    return "loss" in metric


@attrs.frozen
class History:
    """A run directory's metrics records, as read (unreadable lines already skipped and logged)."""

    run_dir: str
    records: list[dict]

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / "metrics.jsonl"


def load_history(run_dir: str | Path) -> list[dict]:
    """The metrics records of a run directory; lines that are not records are skipped, with a warning."""
    return _load(run_dir).records


def _load(run_dir: str | Path) -> History:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ReportError(f"{str(run_dir)!r} is not a run directory (no metrics.jsonl)")
    try:
        read = read_records(path)
    except OSError as error:
        raise ReportError(f"cannot read {path}: {error.strerror or error}") from None
    message = read.describe_skipped(path)
    if message:
        logger.warning("%s", message)
    return History(str(run_dir), read.records)


@attrs.frozen
class Curve:
    """One metric of one run, round by round.

    Attributes:
      rounds, values: the rounds that measured the metric, and its values (floats, maybe NaN or Inf).
      empty_rounds: rounds whose section measured no examples, so the metric has no value there.
      not_numbers: values skipped because they are not numbers (strings, booleans, lists, huge integers).
      last_is_empty: the last round recording the section measured no examples.
    """

    rounds: list[int]
    values: list[float]
    empty_rounds: list[int]
    not_numbers: int
    last_is_empty: bool

    @property
    def recorded(self) -> bool:
        return bool(self.rounds or self.empty_rounds)


def metric_curve(history: list[dict], metric: str) -> Curve:
    """``metric`` (``section/name``, e.g. ``eval/accuracy``, or a bare train metric) over the rounds."""
    section, _, name = metric.rpartition("/")
    section = section or "train"
    rounds, values, empty, not_numbers, last_empty = [], [], [], 0, False
    for record in history:
        metrics = record.get(section)
        if not isinstance(metrics, dict):
            not_numbers += metrics is not None  # a section that is not an object holds no numbers
            continue
        if name not in COUNT_METRICS and _no_examples(record, section):
            empty.append(record["round"])
            last_empty = True
            continue
        if name not in metrics:
            continue
        number = _as_number(metrics[name])
        if number is None:
            not_numbers += 1
            continue
        rounds.append(record["round"])
        values.append(number)
        last_empty = False
    return Curve(rounds, values, empty, not_numbers, last_empty)


def curve(history: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """``(rounds, values)`` of ``metric``: ``section/name`` (e.g. ``eval/accuracy``) or a bare train metric.

    Rounds that measured no examples and values that are not numbers are left out (``metric_curve``).
    """
    found = metric_curve(history, metric)
    return found.rounds, found.values


def _no_examples(record: dict, section: str) -> bool:
    """Whether the record's ``section`` measured no examples (a count of exactly 0)."""
    counts = [record[section].get("num_examples")]
    if section == "train":  # a round's own count: the clients' examples, whatever the model reports
        counts.append(record.get("num_examples"))
    return any(_as_number(c) == 0 for c in counts)


def _as_number(value: Any) -> Optional[float]:
    """A JSON number as a float; None for anything else (``"0.99"``, ``true``, lists, integers past float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _warn_not_numbers(history: History, metric: str, found: Curve) -> None:
    if found.not_numbers:
        noun = "value" if found.not_numbers == 1 else "values"
        logger.warning("skipped %d %s of %s in %s: not numbers (strings, booleans, lists or numbers past "
                       "float range)", found.not_numbers, noun, metric, history.path)


def compare_table(run_dirs: Sequence[str | Path], targets: Sequence[Target] = ()) -> str:
    """A markdown table: per run its rounds, final and best metrics, wall time, and time to each target.

    A final value from a round that measured no examples reads "no examples";
    such rounds never reach a target, and their number per section is a column
    of its own when any run has one.
    """
    histories = [_load(d) for d in run_dirs]
    curves = {}
    for history in histories:
        for metric in list(DEFAULT_METRICS) + [t.metric for t in targets]:
            if (history.run_dir, metric) not in curves:
                found = curves[history.run_dir, metric] = metric_curve(history.records, metric)
                _warn_not_numbers(history, metric, found)
    metrics = [m for m in DEFAULT_METRICS if any(curves[h.run_dir, m].recorded for h in histories)]
    sections = [s for s in ("train", "eval") if any(_empty_count(h.records, s) for h in histories)]
    header = ["run", "rounds", "wall time (s)"]
    header += [f"{kind} {m}" for m in metrics for kind in ("final", "best")]
    header += [f"{s} rounds with {NO_EXAMPLES}" for s in sections]
    for target in targets:
        sign = "<=" if lower_is_better(target.metric) else ">="
        header += [f"rounds to {target.metric} {sign} {target.value:g}", "seconds to it"]
    rows = []
    for history in histories:
        records = history.records
        row = [history.run_dir, str(len(records)), f"{_wall_time(records):.1f}"]
        for metric in metrics:
            found = curves[history.run_dir, metric]
            finite = [v for v in found.values if math.isfinite(v)]
            best = (min if lower_is_better(metric) else max)(finite) if finite else None
            final = NO_EXAMPLES if found.last_is_empty else _number(found.values[-1] if found.values else None)
            row += [final, _number(best) if finite or not found.empty_rounds else NO_EXAMPLES]
        row += [str(_empty_count(records, s)) for s in sections]
        for target in targets:
            reached = _rounds_to(curves[history.run_dir, target.metric], target)
            row += ["not reached", "-"] if reached is None else [
                str(reached), f"{_wall_time([r for r in records if r['round'] <= reached]):.1f}"]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]) + "\n"


def _empty_count(records: list[dict], section: str) -> int:
    return sum(1 for r in records if isinstance(r.get(section), dict) and _no_examples(r, section))


def _rounds_to(found: Curve, target: Target) -> Optional[int]:
    """The first round whose measured value reaches the target (rounds without examples have none)."""
    for round_num, value in zip(found.rounds, found.values):
        if not math.isfinite(value):
            continue
        if (value <= target.value) if lower_is_better(target.metric) else (value >= target.value):
            return round_num
    return None


def _wall_time(history: list[dict]) -> float:
    times = (_as_number(r.get("round_time_s", 0.0)) for r in history)
    return sum(t for t in times if t is not None and math.isfinite(t) and t >= 0)


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def _cell(text: str) -> str:
    # A run directory's name lands in the table: keep its '|' and newlines from breaking the row.
    return text.replace("|", "\\|").replace("\n", " ")


def check_plot_options(out: str | Path, size: Any) -> tuple[Path, tuple[int, int]]:
    """``out`` and ``size`` checked before anything is read or drawn; ``ReportError`` names a bad one.

    ``size`` is ``(width, height)`` in pixels: integers, each side between
    ``MIN_SIDE`` and ``MAX_SIDE``, at most ``MAX_PIXELS`` in all. ``out``'s
    folder must exist (a mistyped folder is refused rather than created) and
    ``out`` must not be a folder.
    """
    try:
        width, height = size
    except (TypeError, ValueError):
        raise ReportError(f"--size {size!r}: expected WIDTH HEIGHT in pixels, e.g. --size 800 500") from None
    for side, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIDE <= value <= MAX_SIDE:
            raise ReportError(
                f"--size {width} {height}: the {side} must be a whole number of pixels from {MIN_SIDE} to "
                f"{MAX_SIDE}, got {value!r}; e.g. --size 800 500"
            )
    if width * height > MAX_PIXELS:
        raise ReportError(
            f"--size {width} {height}: {width * height:,} pixels, more than the {MAX_PIXELS:,} a plot may have "
            "(the image is drawn in memory); e.g. --size 4000 2500"
        )
    out = Path(out)
    folder = out.parent
    if out.is_dir():
        raise ReportError(f"--out {str(out)!r} is a folder; name the image file, e.g. --out {out / 'plot.png'}")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ReportError(
            f"--out {str(out)!r}: its folder {str(folder)!r} {what}; create it first (mkdir -p {folder}) "
            "or write elsewhere"
        )
    return out, (width, height)


def plot_runs(
    run_dirs: Sequence[str | Path], metric: str, out: str | Path, size: tuple[int, int] = (800, 500)
) -> Path:
    """One curve of ``metric`` per run on a single figure, saved as a ``size``-pixel image.

    Rounds that measured no examples break the run's line and are marked with
    an ``x`` on the bottom edge, labelled "no examples". The image format
    follows ``out``'s suffix (PNG, SVG, PDF, ... as matplotlib writes them).
    """
    out, size = check_plot_options(out, size)
    histories = [_load(d) for d in run_dirs]
    curves = [(h, metric_curve(h.records, metric)) for h in histories]
    for history, found in curves:
        _warn_not_numbers(history, metric, found)
    if not any(found.recorded for _, found in curves):
        raise ReportError(f"no run records metric {metric!r}; try e.g. {', '.join(DEFAULT_METRICS)}")

    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed, and no GUI event loop
    from matplotlib import pyplot as plt

    dpi = 100
    figure, axes = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    try:
        formats = figure.canvas.get_supported_filetypes()
        image_format = out.suffix.lower().lstrip(".") or "png"  # no suffix: a PNG, under the name given
        if image_format not in formats:
            raise ReportError(
                f"--out {str(out)!r}: cannot write a {image_format!r} image; use one of "
                f"{', '.join('.' + f for f in sorted(formats))}, e.g. --out plot.png"
            )
        for history, found in curves:
            if found.recorded:
                _draw(axes, Path(history.run_dir).name, found)
        axes.set_xlabel("round")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        try:
            figure.savefig(out, dpi=dpi, format=image_format)
        except OSError as error:
            raise ReportError(f"cannot write {str(out)!r}: {error.strerror or error}") from None
    finally:
        plt.close(figure)
    return out


def _draw(axes: Any, label: str, found: Curve) -> None:
    """The run's line, broken at rounds without examples (NaN), which get an ``x`` on the bottom edge."""
    points = sorted([(r, v if math.isfinite(v) else math.nan) for r, v in zip(found.rounds, found.values)]
                    + [(r, math.nan) for r in found.empty_rounds])
    rounds, values = [p[0] for p in points], [p[1] for p in points]
    line, = axes.plot(rounds, values, marker="." if len(rounds) < 30 else None, label=label)
    if found.empty_rounds:
        # x in data coordinates, y in axes coordinates: on the bottom edge whatever the values' range.
        axes.plot(found.empty_rounds, [0.0] * len(found.empty_rounds), linestyle="none", marker="x",
                  color=line.get_color(), clip_on=False, transform=axes.get_xaxis_transform(),
                  label=f"{label}: {NO_EXAMPLES} ({_rounds(len(found.empty_rounds))})")


def _rounds(count: int) -> str:
    return f"{count} round" if count == 1 else f"{count} rounds"
