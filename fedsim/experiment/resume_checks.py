"""Resuming only the run a checkpoint belongs to: config.toml's hash in every checkpoint.

Every checkpoint a run writes records the text of the run's ``config.toml``
and its SHA-256 (:func:`checkpoint_meta`). ``fedsim resume`` continues from
the newest readable checkpoint written under the same ``config.toml``
(:func:`choose_checkpoint`); one written under another config (an edited
file, or another run's checkpoints in the directory) is never resumed from.
If no checkpoint matches, the error shows a unified diff of what changed.

The one change allowed is the number of rounds, and only explicitly:
``fedsim resume RUN_DIR --rounds N`` (:func:`set_rounds`) rewrites the
``rounds`` line and marks it, so a later plain resume (after a kill, before
the next checkpoint) knows the change was asked for.
"""
from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Optional

from fedsim.checkpoint import CheckpointError, Restored, list_checkpoints, load_checkpoint, read_header
from fedsim.experiment.lock import RunDirectoryError

# The top-level ``rounds = N`` line config_to_toml writes, with the marker set_rounds adds.
_ROUNDS_LINE = re.compile(r"^rounds = (\d+)(  # set by 'fedsim resume --rounds \d+'.*)?$", re.MULTILINE)


_OTHER_CONFIG = "written under another config.toml (another run, or the file was edited)"


class ConfigChangedError(RunDirectoryError):
    """``config.toml`` differs from the config the run's checkpoints were written under."""


class UnhashedCheckpointError(RunDirectoryError):
    """The run directory's checkpoints were written before checkpoints recorded their config."""


class RoundsError(RunDirectoryError):
    """``--rounds`` asks for fewer rounds than the checkpoint already ran."""


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_meta(config_text: str) -> dict:
    """The metadata every checkpoint of a run carries: its config.toml and that text's SHA-256."""
    return {"config_sha256": config_sha256(config_text), "config_toml": config_text}


def _rounds_line(text: str) -> Optional[re.Match]:
    """The top-level ``rounds`` line: before the first ``[table]`` header, where TOML puts top-level keys."""
    header = re.search(r"^\[", text, re.MULTILINE)
    return _ROUNDS_LINE.search(text, 0, header.start() if header else len(text))


def _without_rounds(text: str) -> str:
    line = _rounds_line(text)
    return text if line is None else text[: line.start()] + "rounds = ?" + text[line.end():]


def set_rounds(text: str, rounds: int, was: int) -> str:
    """``text`` with its top-level ``rounds`` set to ``rounds``, marked as set by ``--rounds``."""
    line = _rounds_line(text)
    if line is None:
        raise RunDirectoryError("config.toml has no top-level 'rounds = N' line to change; "
                                "it was not written by fedsim run")
    marked = f"rounds = {rounds}  # set by 'fedsim resume --rounds {rounds}' (was {was})"
    return text[: line.start()] + marked + text[line.end():]


def _matches(meta: dict, config_text: str, rounds_given: bool) -> bool:
    """Whether a checkpoint's recorded config is ``config_text``, up to an allowed rounds change.

    The rounds line may differ when ``--rounds`` is given now, or when the
    current line carries the mark of an earlier ``--rounds``.
    """
    if meta.get("config_sha256") == config_sha256(config_text):
        return True
    line = _rounds_line(config_text)
    rounds_changed_on_purpose = rounds_given or (line is not None and line.group(2) is not None)
    recorded = meta.get("config_toml")
    return (rounds_changed_on_purpose and isinstance(recorded, str)
            and _without_rounds(recorded) == _without_rounds(config_text))


def choose_checkpoint(
    run_dir: Path, template: Any, config_text: str, rounds_given: bool = False,
    describe: Callable[[str], str] = str,
) -> Restored:
    """The newest readable checkpoint written under ``config_text``; the others are listed in ``skipped``.

    Raises:
      UnhashedCheckpointError: the newest readable checkpoint records no config
        (written by a fedsim from before config hashing).
      ConfigChangedError: readable checkpoints exist, none under this config;
        the message holds a diff against the newest one's config.
      CheckpointError: no readable checkpoint at all (``describe`` rewrites
        each reason, e.g. to name model variables).
    """
    skipped: list[tuple[Path, str]] = []
    other_config: Optional[tuple[Path, dict]] = None
    for _, path in list_checkpoints(run_dir / "checkpoints"):
        # The config first: a checkpoint of another config is refused for that, not for its arrays.
        try:
            _, meta = read_header(path)
        except CheckpointError as error:
            skipped.append((path, describe(str(error))))
            continue
        if "config_sha256" not in meta:
            if other_config is None:
                raise UnhashedCheckpointError(
                    f"{str(run_dir)!r} predates config hashing: its checkpoint {path.name} does not record "
                    "the config it was written under, so resuming cannot check that config.toml is unchanged. "
                    f"Start a new run from its config instead: fedsim run {run_dir / 'config.toml'} --out NEW_DIR")
            continue  # older than a checkpoint of another config: never resumed from
        if not _matches(meta, config_text, rounds_given):
            skipped.append((path, _OTHER_CONFIG))
            other_config = other_config or (path, meta)
            continue
        try:
            restored = load_checkpoint(path, template)
        except CheckpointError as error:
            skipped.append((path, describe(str(error))))
            continue
        return Restored(restored.path, restored.round_num, restored.state, restored.meta, skipped)
    if other_config is not None:
        path, meta = other_config
        reasons = "".join(f"\n  also unreadable: {p.name}: {why}" for p, why in skipped if why != _OTHER_CONFIG)
        raise ConfigChangedError(_changed_message(run_dir, path, meta, config_text) + reasons)
    reasons = "".join(f"\n  skipped {p.name}: {why}" for p, why in skipped)
    raise CheckpointError(f"no readable checkpoint in {str(run_dir / 'checkpoints')!r}{reasons or ' (there are none)'}")


def _changed_message(run_dir: Path, path: Path, meta: dict, config_text: str) -> str:
    recorded = meta.get("config_toml")
    if not isinstance(recorded, str):
        diff = "  (the checkpoint records only the config's hash)"
    else:
        lines = difflib.unified_diff(recorded.splitlines(), config_text.splitlines(),
                                     f"config of {path.name}", "config.toml", lineterm="", n=1)
        diff = "\n".join(lines)
    only_rounds = isinstance(recorded, str) and _without_rounds(recorded) == _without_rounds(config_text)
    fix = (f"to change the number of rounds, use 'fedsim resume {run_dir} --rounds N' (it rewrites that line "
           "itself and records the change)"
           if only_rounds else
           "resuming under a changed config would continue on other data or settings. Undo the edit to resume, "
           f"or start a new run from the edited file: fedsim run {run_dir / 'config.toml'} --out NEW_DIR "
           f"(--rounds N of 'fedsim resume' is the one change a resume allows)")
    return (f"{run_dir / 'config.toml'} is not the config the run's checkpoints were written under "
            f"(newest: {path.name}); {fix}. What changed:\n{diff}")


def check_rounds(rounds: int, checkpoint_round: int, run_dir: Path, source: str) -> None:
    """A run may be extended or end sooner, never before the rounds its checkpoint already ran.

    ``source`` names where ``rounds`` came from (``--rounds 5``, ``rounds = 5 in config.toml``).
    """
    if rounds < checkpoint_round:
        raise RoundsError(
            f"{source} is fewer than the {checkpoint_round} rounds {str(run_dir)!r} has already run "
            f"(its newest checkpoint); a run cannot be shortened below its checkpoint. "
            f"Resume with --rounds {checkpoint_round} or more")
