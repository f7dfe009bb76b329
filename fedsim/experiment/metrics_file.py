"""Writing, reading and repairing ``metrics.jsonl``: one JSON record per round.

``MetricsAppender`` writes the run's records, each whole or not at all.

Two readers over one line parser. ``read_metrics`` serves the run itself
(resume, the summary): a damaged line is a ``MetricsFileError`` naming it,
since a resume that rewrote a file it had misread would lose rounds.
``read_records`` serves the reports (``fedsim plot``, ``fedsim compare``),
which must read whatever a file holds, edited, damaged or hostile: every
line that is not a record is skipped and counted by reason, never a
traceback. A record is a JSON object with an integer ``round`` from 1 to ``MAX_ROUND``.

This module imports no TensorFlow: the file-reading commands start without it.
"""
from __future__ import annotations

import collections
import errno
import json
import os
from pathlib import Path
from typing import Optional

# The largest round a record may name: every round up to it is exact as a float (plots, JSON readers).
MAX_ROUND = 2**53


class MetricsFileError(ValueError):
    """``metrics.jsonl`` does not hold the rounds a run directory says it should."""


class MetricsWriteError(MetricsFileError):
    """A record could not be appended (e.g. the disk is full); the file keeps every earlier record whole."""


# A write refused for lack of space: the fix is to free some, then resume.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class MetricsAppender:
    """Appends one record per line to a metrics file, each line whole or not at all.

    A line goes to the kernel in one ``os.write``, so it is on its way to disk
    when ``append`` returns (nothing is buffered in the process). A write
    that fails or stops short (a full disk) is cut back off, so the file never
    ends in half a line, and raises ``MetricsWriteError`` saying how to continue.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # O_APPEND: each line lands at the file's current end, also after a failed line was cut
        # back off (a plain offset would stay past it and leave a gap of zero bytes).
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)

    def append(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # the disk filled up mid-line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as error:
            raise self._failed(record.get("round"), size, error) from error

    def _failed(self, round_num, size: int, error: OSError) -> MetricsWriteError:
        try:
            os.ftruncate(self._fd, size)
            kept = "the file is as it was before"
        except OSError:
            # A resume rewrites the file from its whole records; a cut-short last line is ignored.
            kept = "the file may end in part of that line, which 'fedsim resume' drops"
        reason = error.strerror or str(error)
        if error.errno in _NO_SPACE:
            reason += " (the disk is full)"
        return MetricsWriteError(
            f"could not append round {round_num}'s record to {self.path}: {reason}; {kept}. "
            f"Free disk space, then continue the run with 'fedsim resume {self.path.parent}'"
        )

    def close(self) -> None:
        os.close(self._fd)


class _NotARecord(Exception):
    """One line that is not a metrics record; its message is the reason, as counted."""


def parse_record(line: bytes) -> dict:
    """One line of ``metrics.jsonl`` as a record, or ``_NotARecord`` saying why not."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _NotARecord("not UTF-8 text") from None
    try:
        record = json.loads(text)
    except RecursionError:  # json recurses once per level: thousands of '[' exhaust the stack
        raise _NotARecord("nested too deeply") from None
    except json.JSONDecodeError:
        raise _NotARecord("not JSON") from None
    except ValueError:  # Python refuses integers of more than 4300 digits (int_max_str_digits)
        raise _NotARecord("a number too long to read") from None
    if not isinstance(record, dict):
        raise _NotARecord("not a JSON object")
    if "round" not in record:
        raise _NotARecord("no round")
    round_num = record["round"]
    if isinstance(round_num, bool) or not isinstance(round_num, int) or not 1 <= round_num <= MAX_ROUND:
        raise _NotARecord("round not an integer from 1 to 2**53")
    return record


def _lines(path: str | Path) -> list[bytes]:
    with open(path, "rb") as handle:  # bytes: a line that is not UTF-8 must not sink the others
        return handle.read().split(b"\n")


def read_metrics(path: str | Path) -> list[dict]:
    """Every complete record; a last line cut short by a killed run is ignored.

    Any other line that is not a record (``parse_record``) is a ``MetricsFileError``
    naming the line and why.
    """
    records = []
    lines = _lines(path)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(parse_record(line))
        except _NotARecord as reason:
            if number == len(lines):  # no newline yet: the write was interrupted
                break
            raise MetricsFileError(
                f"{path}, line {number}: not a metrics record ({reason}); every line must be a JSON object "
                "with an integer 'round', as the run writes them: repair or delete that line"
            ) from None
    return records


class RecordsRead:
    """The records of a metrics file, and how many lines were skipped for each reason."""

    def __init__(self, records: list[dict], skipped: "collections.Counter[str]"):
        self.records = records
        self.skipped = skipped

    def describe_skipped(self, path: str | Path) -> Optional[str]:
        """``skipped 3 records of PATH: 2 not JSON, 1 no round``, or None when none was skipped."""
        total = sum(self.skipped.values())
        if not total:
            return None
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
        noun = "record" if total == 1 else "records"
        return f"skipped {total} {noun} of {path}: {reasons}"


def read_records(path: str | Path) -> RecordsRead:
    """Every record of a metrics file, skipping (and counting) every line that is not one.

    A last line cut short (no newline yet: a run still writing, or killed)
    is ignored as ``read_metrics`` ignores it, and not counted.
    """
    records, skipped = [], collections.Counter()
    lines = _lines(path)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(parse_record(line))
        except _NotARecord as reason:
            if number == len(lines):
                break
            skipped[str(reason)] += 1
    return RecordsRead(records, skipped)


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
