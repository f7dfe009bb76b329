"""One process per run directory: an exclusive ``flock`` on ``RUN_DIR/.fedsim.lock``.

Two processes writing one run directory interleave ``metrics.jsonl`` and
prune each other's checkpoints (issue 18), so ``fedsim run``, ``resume`` and
``sweep`` hold this lock for their whole life. ``flock`` belongs to the open
file, so the kernel releases it when the holder dies, even by SIGKILL: a
killed run never leaves a stale lock, only a lock file that the next process
locks again. The holder writes its pid into the file after locking, so the
second process can say who holds it.

The file is removed on a clean release, so a finished run directory holds
only the run's own files. Removing a lock file is racy unless every locker
checks, once it holds the lock, that the file it locked is still the one at
the path (same inode); :func:`lock_run_dir` does, and retries otherwise.

The lock is not inherited by programs the run starts (Python opens files
close-on-exec), but a bare ``os.fork`` child would share it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".fedsim.lock"


class RunDirectoryError(ValueError):
    """Raised when a run directory cannot be used (e.g. it already holds a run, or holds none).

    Defined here, the lowest module that raises it, and re-exported by
    :mod:`fedsim.experiment.run`, where the CLI's list of expected errors finds it.
    """


class RunDirectoryLocked(RunDirectoryError):
    """Another live process holds the run directory's lock."""


class RunDirectoryUnwritable(RunDirectoryError):
    """The run directory refuses a file the run must write (read-only, full disk, no permission)."""


def unwritable(path: Path, error: OSError, action: str) -> RunDirectoryUnwritable:
    """The error for ``error`` raised by ``action`` (``"create the lock file"``) on ``path``, with the fix."""
    return RunDirectoryUnwritable(
        f"cannot {action} {str(path)!r}: {error.strerror or error}; a run needs a run directory it can "
        "write: check its permissions and free disk space. Files already in it are unchanged"
    )


@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Holds the exclusive lock of ``run_dir`` (which must exist) for the ``with`` block.

    Raises:
      RunDirectoryLocked: another process holds it; the message names its pid.
      RunDirectoryUnwritable: the lock file cannot be created (a read-only directory).
    """
    path = Path(run_dir) / LOCK_NAME
    fd = _acquire(path, Path(run_dir))
    try:
        # The pid only names the holder in another process's error: a full disk must not stop the run here.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        # Unlink while still holding the lock: a process that opened the old
        # file sees the inode change after locking it and starts over.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _acquire(path: Path, run_dir: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise unwritable(path, error, "create the lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirectoryLocked(
                f"{str(run_dir)!r} is in use by another fedsim process ({_holder(path)}, lock file {path}); "
                "two processes in one run directory would mix their metrics and checkpoints. Wait for it "
                "to finish or stop it, then retry (a killed process releases the lock by itself)"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed this file as we locked it: lock the new one


def _holder(path: Path) -> str:
    """``pid 1234`` from the lock file, or why it is unknown (it is written just after locking)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid not yet written"
