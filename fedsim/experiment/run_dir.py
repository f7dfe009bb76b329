"""A run directory's own files: which a run writes, refusing to replace anyone's, writing them whole.

:func:`prepare_run_dir` decides whether a directory may take a new run (it
never replaces or prunes another run's outputs, nor touches the user's own
files); :func:`write_atomic` writes a file whole or not at all; :func:`run_log`
copies the library's log records, and how the run ended, into ``run.log``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

from fedsim.checkpoint import list_checkpoints
from fedsim.experiment.lock import RunDirectoryError, unwritable
from fedsim.experiment.signals import RunInterrupted, interrupt_behind

# The run's records go out under the run module's name, which run.log's first line carries.
logger = logging.getLogger("fedsim.experiment.run")


def default_run_dir(config: Any, root: str | Path = "runs") -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{config.algorithm.name}-{config.model.name}-seed{config.seed}"


# What a run writes into its directory besides its lock: name -> (kind, what it holds).
RUN_OUTPUTS = {
    "config.toml": ("file", "resolved config"),
    "metrics.jsonl": ("file", "per-round metrics"),
    "summary.json": ("file", "summary"),
    "run.log": ("file", "log"),
    "checkpoints": ("folder", "checkpoints"),
    "tensorboard": ("folder", "TensorBoard events"),
    "client_state": ("folder", "per-client algorithm state"),
    "client_non_trainable": ("folder", "per-client non-trainable weights"),
}
START_MESSAGE = "starting run in %s"  # the first record of every run.log
_START_RECORD = re.compile(rf"^\S+ \S+ INFO {re.escape(logger.name)}: starting run in ")


class RunDirectoryIsAFileError(RunDirectoryError):
    """The run directory's path is an existing file, or lies under one."""


class RunOutputsExistError(RunDirectoryError):
    """The run directory holds files or folders a new run would replace or prune."""


class RunOutputTypeError(RunDirectoryError):
    """A run's file exists as a folder there, or a run's folder as a file (e.g. a folder named run.log)."""


def prepare_run_dir(run_dir: Path, overwrite: bool = False) -> list[Path]:
    """Makes ``run_dir`` for a new run; returns the earlier outputs to remove before the run writes.

    A directory holding any of :data:`RUN_OUTPUTS` is refused, so a new run
    never replaces a user's ``config.toml`` nor prunes (``checkpoint.keep``) or
    later resumes from another run's checkpoints. Two exceptions:
    ``overwrite`` (``--overwrite``) returns all of them, checkpoints included,
    for :func:`remove_outputs` to delete explicitly; and the remains of a run that
    stopped before its first round (:func:`_stopped_before_round_one`) are
    returned but for its ``run.log``, which the new run appends to. No other
    file in ``run_dir`` is ever touched. Call it again once owning the directory.

    Raises:
      RunDirectoryIsAFileError: ``run_dir`` is a file, or a folder on its path is.
      RunOutputTypeError: an output exists as the other kind (never removed, even with ``overwrite``).
      RunOutputsExistError: outputs exist, and neither exception applies.
    """
    found = _outputs(run_dir)
    if found and not overwrite:
        if not _stopped_before_round_one(run_dir, found):
            listing = [f"{name}/" if RUN_OUTPUTS[name][0] == "folder" else name for name in found]
            raise RunOutputsExistError(
                f"{str(run_dir)!r} already holds a run's files ({', '.join(listing)}), which a new run would "
                "replace or prune. Choose another --out (or none: a new folder under runs/), continue an "
                f"interrupted run with 'fedsim resume {run_dir}', or pass --overwrite to remove just those; "
                "no other file in it is ever touched"
            )
        found.remove("run.log")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise RunDirectoryIsAFileError(
            f"cannot make the run directory {str(run_dir)!r}: {error.strerror} (a folder on its path is a "
            "file); choose another --out") from None
    except OSError as error:
        raise unwritable(run_dir, error, "make the run directory") from None
    return [run_dir / name for name in found]


def _outputs(run_dir: Path) -> list[str]:
    """The names of :data:`RUN_OUTPUTS` in ``run_dir``, each checked to be of its kind."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryIsAFileError(
            f"the run directory {str(run_dir)!r} is an existing file, not a directory; choose another --out "
            "(a directory, made if missing)")
    found = []
    for name, (kind, holds) in RUN_OUTPUTS.items():
        path = run_dir / name
        if not os.path.lexists(path):
            continue
        actual = "folder" if path.is_dir() else "file" if path.is_file() else "broken link or special file"
        if actual != kind:
            raise RunOutputTypeError(
                f"{str(path)!r} is a {actual}, where a run writes its {holds} {kind}; fedsim neither writes into "
                "it nor removes it (not even with --overwrite): move or rename it, or choose another --out")
        found.append(name)
    return found


def _stopped_before_round_one(run_dir: Path, found: list[str]) -> bool:
    """Whether the outputs ``found`` are what a run that stopped before its first round leaves.

    Its ``run.log`` is fedsim's (it begins with a run's start record), and
    it wrote no metrics record, summary or checkpoint: its ``config.toml`` is
    the resolved config of a run that never ran, so the directory is reused
    without ``--overwrite``, as after a config or data error.
    """
    if "run.log" not in found or not _START_RECORD.match(_first_line(run_dir / "run.log")):
        return False
    if "summary.json" in found or list_checkpoints(run_dir / "checkpoints"):
        return False
    return "metrics.jsonl" not in found or (run_dir / "metrics.jsonl").stat().st_size == 0


def _first_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.readline(1000).decode("utf-8", errors="replace")
    except OSError:
        return ""


def remove_outputs(paths: Sequence[Path]) -> None:
    """Deletes earlier run outputs (from :func:`prepare_run_dir`); a link is removed, not followed."""
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as error:
            raise unwritable(path, error, "remove the earlier run output") from None


def write_atomic(path: Path, text: str, what: str) -> None:
    """Writes ``text`` to ``path`` whole or not at all: a full disk never leaves a truncated file."""
    temp = path.with_name(f".{path.name}.fedsim-tmp")  # a name no file of the user's has
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise unwritable(path, error, f"write {what}") from None


@contextlib.contextmanager
def no_empty_metrics(metrics: Path) -> Iterator[None]:
    """Removes ``metrics`` if the run fails before writing its first round.

    Only for a new run: ``prepare_run_dir`` made sure the file did not exist, so
    an empty one is this run's own, and left behind it would block ``--out``.
    """
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            if metrics.stat().st_size == 0:
                metrics.unlink()
        raise


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Copies the library's log records into ``run_dir/run.log`` (appended) while the run lasts."""
    try:
        handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    except OSError as error:
        raise unwritable(run_dir / "run.log", error, "open the run's log") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    package_logger = logging.getLogger("fedsim")
    previous_level = package_logger.level
    package_logger.addHandler(handler)
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    try:
        yield
    except BaseException as error:
        # To the file only: the CLI prints the message of an expected error itself.
        handler.handle(_failure_record(error))
        raise
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
        handler.close()


def _failure_record(error: BaseException) -> logging.LogRecord:
    """The log record of how a run ended early: interrupted, aborted, or failed (with its traceback)."""
    if isinstance(error, RunInterrupted):
        level, message, exc_info = logging.WARNING, f"run interrupted: {error}", None
    elif (aborted := interrupt_behind(error)) is not None:  # wrapped when the signal landed inside a C call
        level, message, exc_info = logging.ERROR, f"run aborted: {aborted or 'Ctrl-C'}", None
    else:
        level, message = logging.ERROR, f"run failed: {type(error).__name__}: {error}"
        exc_info = (type(error), error, error.__traceback__)
    return logger.makeRecord(logger.name, level, __file__, 0, message, None, exc_info)
