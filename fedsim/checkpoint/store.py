"""Checkpoints on disk: one directory per round, written atomically, the newest ``keep`` kept.

Layout: ``<dir>/round-000010/state.json`` (format, round, JSON structure of
the state, free-form metadata, SHA-256 of the arrays, SHA-256 of the header)
and ``<dir>/round-000010/arrays.npz``. Both are written into a temporary
directory, fsynced, and renamed into place with ``os.replace``: a reader (or
a run killed mid-write) sees either the whole checkpoint or none of it.

The header hash covers the format, version, round number and metadata, so a
hand-edited round (which would make a resumed run silently skip or repeat
rounds) or metadata (a run's config hash) is refused like a corrupted file.
The structure is left to :func:`~fedsim.checkpoint.tree.restore`, which
checks it against the run's own state, and the arrays to their own hash.
Version 1 checkpoints (no header hash) still load; their metadata is
unverified, which callers that rely on it must refuse.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional

import attrs
import numpy as np

from fedsim.checkpoint.tree import StructureMismatchError, flatten, restore

logger = logging.getLogger(__name__)

FORMAT = "fedsim-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_NAME = re.compile(r"^round-(\d+)$")
_TEMPORARY = re.compile(r"^\.tmp-round-\d+-\d+$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which one and why."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (e.g. the disk is full); older ones are intact."""


@attrs.frozen
class Restored:
    """A checkpoint read back: its round, the state (shaped like the template) and metadata."""

    path: Path
    round_num: int
    state: Any
    meta: dict
    skipped: list[tuple[Path, str]] = attrs.field(factory=list)


def checkpoint_path(directory: str | Path, round_num: int) -> Path:
    return Path(directory) / f"round-{round_num:06d}"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(round, path)`` of every checkpoint directory, newest first (temporary ones excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def remove_temporary(directory: str | Path) -> list[Path]:
    """Removes the ``.tmp-round-*`` directories that writers killed mid-checkpoint left behind.

    Call it only while owning ``directory`` (a run holds its run directory's
    lock): a live writer's temporary directory would be removed under it.
    Returns what was removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = [p for p in directory.iterdir() if _TEMPORARY.match(p.name) and p.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def save_checkpoint(
    directory: str | Path, round_num: int, state: Any, meta: Optional[dict] = None, keep: int = 0
) -> Path:
    """Writes ``state`` (a nest of arrays/scalars/attrs values) for ``round_num``; keeps the newest ``keep`` (0: all).

    Raises:
      CheckpointWriteError: when the disk refuses the write (full, read-only, ...);
        the partial files are removed and every older checkpoint stays intact.
    """
    directory = Path(directory)
    final = checkpoint_path(directory, round_num)
    temp = directory / f".tmp-{final.name}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write(temp, final, round_num, state, meta)
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        older = [r for r, _ in list_checkpoints(directory) if r != round_num]
        intact = f"the newest intact checkpoint is round {older[0]}" if older else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"could not write the checkpoint of round {round_num} to {str(directory)!r}: "
            f"{error.strerror or error}; {intact}. Free disk space, then continue with 'fedsim resume'"
        ) from error
    if keep:
        for _, old in list_checkpoints(directory)[keep:]:
            shutil.rmtree(old)
    return final


def _write(temp: Path, final: Path, round_num: int, state: Any, meta: Optional[dict]) -> None:
    arrays, structure = flatten(state)
    # Through JSON first, as a reader will parse them (and as the header hash covers them).
    structure, meta = json.loads(json.dumps(structure)), json.loads(json.dumps(meta or {}))
    if _holds(final, round_num, arrays, structure, meta):
        # A second save of one round (a stopped run's final checkpoint): replacing the copy
        # would leave a moment with no checkpoint of that round, and may fail on a full disk.
        return
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir()
    with open(temp / "arrays.npz", "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    document = {
        "format": FORMAT,
        "version": VERSION,
        "round": round_num,
        "arrays_sha256": _sha256(temp / "arrays.npz"),
        "structure": structure,
        "meta": meta,
    }
    document["header_sha256"] = _header_sha256(document)
    with open(temp / "state.json", "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(temp)
    if final.exists():  # a re-run round after resume: replace the older copy
        shutil.rmtree(final)
    os.replace(temp, final)
    _fsync_dir(final.parent)


def _holds(path: Path, round_num: int, arrays: dict[str, np.ndarray], structure: Any, meta: dict) -> bool:
    """Whether the intact checkpoint at ``path`` already holds exactly this round, state and metadata."""
    if not path.is_dir():
        return False
    try:
        document = _read_document(path)
        if (document["round"], document.get("structure"), document.get("meta")) != (round_num, structure, meta):
            return False
        if _sha256(path / "arrays.npz") != document.get("arrays_sha256"):
            return False
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}
    except (CheckpointError, OSError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile):
        return False  # damaged: the new copy replaces it
    return stored.keys() == arrays.keys() and all(
        stored[key].dtype == np.asarray(value).dtype and np.array_equal(stored[key], value)
        for key, value in arrays.items())


def read_header(path: str | Path) -> tuple[int, dict]:
    """The round and metadata of a checkpoint, checked against the header hash, without reading the arrays.

    Lets a caller decide whether a checkpoint is one it may use (e.g. by the
    config its metadata records) before paying for, or failing on, its arrays.
    """
    document = _read_document(Path(path))
    return document["round"], dict(document.get("meta", {}))


def _read_document(path: Path) -> dict:
    try:
        document = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: state.json is missing or unreadable ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: state.json is not a {FORMAT} file")
    version = document.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: format version {version!r}, this fedsim reads {list(READABLE_VERSIONS)}")
    if version >= 2 and document.get("header_sha256") != _header_sha256(document):
        raise CheckpointError(f"{path}: state.json's round or metadata does not match its header SHA-256 "
                              "(edited or corrupted)")
    round_num, meta = document.get("round"), document.get("meta", {})
    # bool is an int in Python; a round number never is true/false.
    if type(round_num) is not int or round_num < 0 or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: state.json has round {round_num!r} and meta {meta!r:.80}; "
                              "expected a round number >= 0 and a JSON object")
    named = _NAME.match(path.name)
    if named and int(named.group(1)) != round_num:  # a renamed or copied directory
        raise CheckpointError(f"{path}: the directory is named for round {int(named.group(1))} "
                              f"but its state.json holds round {round_num}")
    return document


def load_checkpoint(path: str | Path, template: Any) -> Restored:
    """Reads one checkpoint into the shape of ``template``; raises ``CheckpointError`` saying why not."""
    path = Path(path)
    document = _read_document(path)
    round_num, meta = document["round"], document.get("meta", {})
    arrays_file = path / "arrays.npz"
    if not arrays_file.is_file():
        raise CheckpointError(f"{path}: arrays.npz is missing")
    if _sha256(arrays_file) != document.get("arrays_sha256"):
        raise CheckpointError(f"{path}: arrays.npz does not match its SHA-256 in state.json (truncated or corrupted)")
    try:
        with np.load(arrays_file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        state = restore(template, document["structure"], arrays)
    # A damaged npz fails inside zipfile/NumPy (EOFError on an empty member, RuntimeError
    # or its subclass NotImplementedError on flipped zip flag bits), and a damaged structure as
    # KeyError/TypeError where a list or number replaced a dict.
    except (OSError, EOFError, RuntimeError, ValueError, TypeError, zipfile.BadZipFile, KeyError) as error:
        reason = str(error) if isinstance(error, StructureMismatchError) else f"{type(error).__name__}: {error}"
        raise CheckpointError(f"{path}: cannot restore the state ({reason})") from None
    return Restored(path, round_num, state, dict(meta))


def load_newest(directory: str | Path, template: Any) -> Restored:
    """The newest checkpoint that reads cleanly; each one skipped is logged and listed in ``skipped``."""
    skipped: list[tuple[Path, str]] = []
    for _, path in list_checkpoints(directory):
        try:
            restored = load_checkpoint(path, template)
        except CheckpointError as error:
            logger.warning("skipping checkpoint %s: %s", path.name, error)
            skipped.append((path, str(error)))
            continue
        return attrs.evolve(restored, skipped=skipped)
    reasons = "".join(f"\n  skipped {p.name}: {why}" for p, why in skipped)
    raise CheckpointError(f"no readable checkpoint in {str(directory)!r}{reasons or ' (there are none)'}")


def _header_sha256(document: dict) -> str:
    """SHA-256 of the fields a reader trusts without checking them against the run's state."""
    header = {key: document.get(key) for key in ("format", "version", "round", "meta")}
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry itself is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
