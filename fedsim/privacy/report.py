"""``fedsim privacy RUN_DIR``: what a run's privacy claim rests on, from its own files.

Reads ``config.toml`` (the aggregator chain as configured) and the ``privacy``
entry every round of ``metrics.jsonl`` carries (written by the round loop from
the mechanism and the run's participation), so the report states what was
accounted, not what a config may have meant.
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

from fedsim.experiment.metrics_file import read_records

# Facts every privacy entry has; the rest are the mechanism's own parameters.
_CLAIM = ("epsilon", "delta", "rounds", "accountant", "mechanism", "sampling", "population_size", "cohort_size",
          "rate", "epoch_rounds", "relation")


class PrivacyReportError(ValueError):
    """The run directory holds no privacy record to report."""


def privacy_records(run_dir: str | Path) -> list[dict]:
    """Every record of ``metrics.jsonl`` with a privacy entry; lines that are not records are skipped
    (and counted on stderr), as ``fedsim plot`` and ``compare`` skip them."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise PrivacyReportError(f"{str(run_dir)!r} is not a run directory (no metrics.jsonl)")
    read = read_records(path)
    skipped = read.describe_skipped(path)
    if skipped:
        print(f"fedsim privacy: {skipped}", file=sys.stderr)
    return [r for r in read.records if _is_claim(r.get("privacy"))]


def _is_claim(entry) -> bool:
    """A privacy entry as the round loop writes it (a hostile file may hold anything there)."""
    return isinstance(entry, dict) and all(k in entry for k in ("epsilon", "delta", "rounds", "accountant",
                                                                "mechanism", "sampling", "relation"))


def _chain(run_dir: Path) -> str:
    try:
        config = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return "(config.toml unreadable)"
    return " -> ".join(str(step.get("name", "?")) for step in config.get("aggregator", [])) or "(none)"


def _sampling(claim: dict) -> str:
    size = f"rate q = {claim['rate']}" if claim["sampling"] == "poisson" else f"cohort of {claim.get('cohort_size')}"
    epoch = f", each client at most once per {claim['epoch_rounds']} rounds" if claim.get("epoch_rounds") else ""
    return (f"{claim['sampling']} ({size} from {claim['population_size']} clients{epoch}); "
            f"neighbouring relation: {claim['relation']}")


def privacy_report(run_dir: str | Path, rows: int = 10) -> str:
    """The mechanism chain, its parameters, the sampling, the accountant and epsilon over rounds."""
    run_dir = Path(run_dir)
    records = privacy_records(run_dir)
    if not records:
        raise PrivacyReportError(
            f"{str(run_dir)!r} has no privacy records: its aggregator chain ({_chain(run_dir)}) holds no privacy "
            "mechanism (dp_fedavg, dp_ftrl, distributed_dp), so no (epsilon, delta) guarantee was accounted"
        )
    claim = records[-1]["privacy"]
    parameters = {k: v for k, v in claim.items() if k not in _CLAIM}
    step = max(1, len(records) // rows)
    shown = records[step - 1::step]
    if shown[-1] is not records[-1]:
        shown.append(records[-1])
    lines = [
        f"aggregator chain: {_chain(run_dir)}",
        f"mechanism:        {claim['mechanism']}",
        "parameters:       " + ", ".join(f"{k}={_text(v)}" for k, v in parameters.items()),
        f"sampling:         {_sampling(claim)}",
        f"accountant:       {claim['accountant']}, delta = {claim['delta']:g}",
        "",
        "round  epsilon",
        *(f"{r['round']:>5}  {_text(r['privacy']['epsilon'])}" for r in shown),
        "",
        f"guarantee: ({_text(claim['epsilon'])}, {claim['delta']:g})-DP after {claim['rounds']} rounds "
        f"({claim['relation']} neighbouring, {claim['sampling']} sampling)",
    ]
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
