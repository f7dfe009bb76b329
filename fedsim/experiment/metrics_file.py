"""Reading and repairing ``metrics.jsonl``: one JSON record per round."""
from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsFileError(ValueError):
    """``metrics.jsonl`` does not hold the rounds a run directory says it should."""


def read_metrics(path: str | Path) -> list[dict]:
    """Every complete record; a last line cut short by a killed run is ignored."""
    records = []
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline yet: the write was interrupted
                break
            raise MetricsFileError(f"{path}, line {number}: not a JSON record") from None
    return records


def truncate_metrics(path: str | Path, last_round: int) -> list[dict]:
    """Keeps rounds 1..``last_round`` (each exactly once) and rewrites the file atomically.

    Records past ``last_round`` belong to rounds the resumed run will redo.
    """
    path = Path(path)
    kept = [r for r in read_metrics(path) if r["round"] <= last_round]
    rounds = [r["round"] for r in kept]
    if rounds != list(range(1, last_round + 1)):
        raise MetricsFileError(
            f"{path} should hold rounds 1..{last_round} once each to resume from round {last_round}; "
            f"it holds {len(rounds)} records for rounds {sorted(set(rounds))[:5]}..."
        )
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in kept)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return kept
