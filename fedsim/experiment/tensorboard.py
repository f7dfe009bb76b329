"""TensorBoard event files: one scalar per metric per round, written with TensorFlow alone.

``tf.summary.scalar`` needs the separate ``tensorboard`` package; the
low-level ``tf.summary.write`` with the scalars plugin's metadata writes the
same events without it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from fedsim.learning.process import ServerState


def _scalar_metadata() -> summary_pb2.SummaryMetadata:
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
    return metadata


def scalars(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for each number of a metrics record: ``train/loss``, ``eval/accuracy``, ..."""
    for section in ("train", "eval", "measurements", "privacy"):
        for name, value in (record.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield f"{section}/{name}", float(value)
    yield "round_time_s", float(record["round_time_s"])


EVENT_FILE_PREFIX = "events.out.tfevents."


def remove_event_files(log_dir: str | Path) -> list[Path]:
    """Removes the event files directly in ``log_dir`` (other files are the user's and stay)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return []
    removed = [p for p in log_dir.iterdir() if p.name.startswith(EVENT_FILE_PREFIX) and p.is_file()]
    for path in removed:
        path.unlink()
    return removed


class TensorBoardWriter:
    """A round callback writing each record's scalars at step = round number."""

    def __init__(self, log_dir: str | Path):
        self._writer = tf.summary.create_file_writer(str(log_dir))
        self._metadata = _scalar_metadata()

    @classmethod
    def rewritten(cls, log_dir: str | Path, records: Iterable[dict[str, Any]]) -> "TensorBoardWriter":
        """A writer whose events are exactly ``records``' scalars, the old event files removed.

        On resume, ``metrics.jsonl`` keeps only the rounds up to the checkpoint;
        event files would keep the dropped rounds too, and TensorBoard would
        show those steps twice once they rerun. The events are rebuilt from
        the kept records instead, so each step appears exactly once. A run
        killed while this runs leaves some steps out, and its resume rebuilds
        them again.
        """
        remove_event_files(log_dir)
        writer = cls(log_dir)
        for record in records:
            writer._write(record)
        writer._writer.flush()
        return writer

    def __call__(self, state: ServerState, record: dict[str, Any]) -> None:
        self._write(record)
        self._writer.flush()

    def _write(self, record: dict[str, Any]) -> None:
        with self._writer.as_default():
            for tag, value in scalars(record):
                tf.summary.write(tag, tf.constant(value, tf.float32), step=record["round"], metadata=self._metadata)

    def close(self) -> None:
        self._writer.close()
