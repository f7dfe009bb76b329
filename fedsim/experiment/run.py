"""Running an experiment into a run directory, and resuming one.

A run directory holds:

- ``config.toml``: the fully resolved config (``fedsim resume`` rebuilds the run from it);
- ``metrics.jsonl``: one JSON record per round, appended and flushed as written;
- ``tensorboard/``: event files with a scalar per metric per round;
- ``checkpoints/round-NNNNNN/``: the state every ``checkpoint.every`` rounds, newest ``keep``;
- ``run.log``: the library's log records for this run, and the error that ended it, if one did;
- ``summary.json``: written when the run ends (with the TensorFlow thread settings);
- ``client_state/``, ``client_non_trainable/``: per-client state of algorithms that keep it;
- ``.fedsim.lock``: while a process owns the directory (:mod:`fedsim.experiment.lock`).

A new run never replaces or prunes what a directory holds (:func:`prepare_run_dir`):
a directory holding any of these is refused unless ``--overwrite``. Every
checkpoint records ``config.toml`` (:mod:`fedsim.experiment.resume_checks`),
so a resume continues only the run it belongs to.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence

import attrs

from fedsim.checkpoint import list_checkpoints, remove_temporary, save_checkpoint
from fedsim.experiment import preflight, resume_checks
from fedsim.experiment.blocks import RunConfig
from fedsim.experiment.build import Experiment, build_experiment
from fedsim.experiment.config import config_to_toml, load_config
# RunDirectoryError is defined with the lock, re-exported here for the CLI's list of expected errors.
from fedsim.experiment.lock import RunDirectoryError, RunDirectoryLocked, lock_run_dir, unwritable  # noqa: F401
from fedsim.experiment.metrics_file import read_metrics, truncate_metrics
from fedsim.experiment.tensorboard import TensorBoardWriter
from fedsim.learning.process import ServerState
from fedsim.runtime import thread_settings
from fedsim.simulation import simulate
from fedsim.simulation.loop import evaluation_sample

logger = logging.getLogger(__name__)


class RunInterrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after a finished round, its checkpoint and metrics written.

    ``exit_code`` is the shell's code for a command ended by that signal (130, 143);
    ``signal_name`` and ``round_num`` say which signal and after which round.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT, round_num: Optional[int] = None):
        super().__init__(message)
        self.exit_code = 128 + int(signum)
        self.signal_name = signal.Signals(signum).name
        self.round_num = round_num


class RunAborted(KeyboardInterrupt):
    """A signal during start-up, or a second one during a round: the run ends at once.

    A KeyboardInterrupt, so code that cleans up after Ctrl-C cleans up after
    it too; the message says what was kept.
    """


def default_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
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
_START_MESSAGE = "starting run in %s"  # the first record of every run.log
_START_RECORD = re.compile(rf"^\S+ \S+ INFO {re.escape(__name__)}: starting run in ")


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
    for :func:`_remove` to delete explicitly; and the remains of a run that
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


def _remove(paths: Sequence[Path]) -> None:
    """Deletes earlier run outputs (from :func:`prepare_run_dir`); a link is removed, not followed."""
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as error:
            raise unwritable(path, error, "remove the earlier run output") from None


def _write_atomic(path: Path, text: str, what: str) -> None:
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


def run_experiment(config: RunConfig, run_dir: Optional[str | Path] = None, progress: bool = True, *,
                   allow_modules: Sequence[str] = (), overwrite: bool = False) -> dict:
    """Runs ``config`` and returns its summary (also written to ``summary.json``).

    Problems the config shows without loading data (missing files, a cohort
    larger than the population, a custom model module that does not exist or
    is not allowed: :mod:`fedsim.experiment.preflight`; ``allow_modules`` are
    the standard-library modules the user allows a custom model function
    from) and a ``run_dir`` that holds a run's outputs (:func:`prepare_run_dir`;
    ``overwrite`` removes them) are raised before the run directory is made.
    A run that fails later records the error in ``run.log``; if no round
    finished, the same ``run_dir`` can be used again.
    """
    preflight.check_config(config, allow_modules)
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    prepare_run_dir(run_dir, overwrite)  # fails before taking the lock when the answer is already clear
    with _signals() as signals, lock_run_dir(run_dir):
        # Again, owning it: another process may have started a run meanwhile.
        _remove(prepare_run_dir(run_dir, overwrite))
        with _run_log(run_dir), _no_empty_metrics(run_dir / "metrics.jsonl"):
            logger.info(_START_MESSAGE, run_dir)  # first: it marks run.log as a run's (see prepare_run_dir)
            config_text = config_to_toml(config)
            _write_atomic(run_dir / "config.toml", config_text, "the run's config")
            experiment = build_experiment(config, state_dir=run_dir)
            # Populations whose size only the loaded data tells (TFF's files): still before round 1.
            preflight.check_population(config, len(experiment.train_data.client_ids))
            return _execute(experiment, run_dir, experiment.process.initialize(), progress, config_text, signals)


@contextlib.contextmanager
def _no_empty_metrics(metrics: Path) -> Iterator[None]:
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


def resume_run(run_dir: str | Path, progress: bool = True, rounds: Optional[int] = None, *,
               trust: bool = False, allow_modules: Sequence[str] = ()) -> dict:
    """Continues the run in ``run_dir`` from its newest readable checkpoint of the same config.

    A ``config.toml`` that calls a custom model function is resumed only with
    ``trust`` or that module in ``allow_modules``, checked before anything in
    the directory changes: a run directory may come from someone else
    (:func:`fedsim.experiment.preflight.check_resume_trust`).

    Unreadable checkpoints, and those written under another ``config.toml``,
    are skipped (each printed with the reason); a ``config.toml`` edited since
    the checkpoints were written is refused with a diff
    (:mod:`fedsim.experiment.resume_checks`). ``rounds`` sets the run's length
    (the one change a resume allows): it must not be below the checkpoint's
    round, and is written into ``config.toml``. Metrics records past the
    checkpoint's round are dropped, since those rounds run again, and the
    TensorBoard events are rebuilt from the records kept, so ``metrics.jsonl``
    and TensorBoard end up with every round exactly once.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise RunDirectoryError(f"{str(run_dir)!r} is not a run directory (no config.toml)")
    if rounds is not None and rounds < 1:
        raise resume_checks.RoundsError(f"--rounds {rounds}: a run has at least 1 round")
    with _signals() as signals, lock_run_dir(run_dir):
        config_text = (run_dir / "config.toml").read_text(encoding="utf-8")
        config = load_config(run_dir / "config.toml")
        preflight.check_resume_trust(config.model, run_dir / "config.toml", trust, allow_modules)
        preflight.check_custom_module(config.model, allow_modules)
        remove_temporary(run_dir / "checkpoints")
        with _run_log(run_dir):
            # Built for the new length at once: a schedule sampler checks it covers every round.
            experiment = build_experiment(config if rounds is None else attrs.evolve(config, rounds=rounds),
                                          state_dir=run_dir)
            template = {"server_state": experiment.process.initialize()}
            if _before_first_checkpoint(run_dir, config):
                if rounds is not None:
                    config_text = _set_rounds(run_dir, config_text, config.rounds, rounds)
                return _restart(experiment, run_dir, template["server_state"], progress, config_text, signals)
            name_variables = _variable_namer(experiment.process.model)
            restored = resume_checks.choose_checkpoint(
                run_dir, template, config_text, rounds_given=rounds is not None, describe=name_variables)
            for path, reason in restored.skipped:
                print(f"fedsim: skipped checkpoint {path.name}: {reason}")
            if rounds is None:
                resume_checks.check_rounds(config.rounds, restored.round_num, run_dir,
                                           f"rounds = {config.rounds} in config.toml")
            else:
                resume_checks.check_rounds(rounds, restored.round_num, run_dir, f"--rounds {rounds}")
                config_text = _set_rounds(run_dir, config_text, config.rounds, rounds)
            logger.info("resuming %s from %s (round %d)", run_dir, restored.path.name, restored.round_num)
            kept = truncate_metrics(run_dir / "metrics.jsonl", restored.round_num)
            return _execute(experiment, run_dir, restored.state["server_state"], progress, config_text, signals,
                            kept_records=kept)


def _before_first_checkpoint(run_dir: Path, config: RunConfig) -> bool:
    """Whether the run stopped before its first checkpoint was due: then it starts again from round 1.

    A kill between round 1's record and its checkpoint, or a failed first
    evaluation, leaves such a directory. Starting again loses nothing: the run
    is determined by its config and seed, and the rounds recorded are fewer
    than ``checkpoint.every``. A finished run, or one whose checkpoints are all
    unreadable, is never restarted (``choose_checkpoint`` explains those).
    """
    if not config.checkpoint.every or list_checkpoints(run_dir / "checkpoints"):
        return False
    if (run_dir / "summary.json").exists():
        return False
    metrics = run_dir / "metrics.jsonl"
    return not metrics.exists() or len(read_metrics(metrics)) < config.checkpoint.every


def _restart(experiment: Experiment, run_dir: Path, initial: ServerState, progress: bool, config_text: str,
             signals: "_Signals") -> dict:
    """Runs ``experiment`` from round 1 in its own directory, dropping the records of rounds it redoes."""
    metrics = run_dir / "metrics.jsonl"
    kept = truncate_metrics(metrics, 0) if metrics.exists() else []
    print(f"fedsim: {run_dir} stopped before its first checkpoint; starting again from round 1")
    logger.info("restarting %s from round 1 (no checkpoint was due yet)", run_dir)
    return _execute(experiment, run_dir, initial, progress, config_text, signals, kept_records=kept)


def _set_rounds(run_dir: Path, config_text: str, old: int, new: int) -> str:
    """Writes ``rounds = new`` into ``config.toml`` (atomically), marked and logged; returns the new text."""
    if new == old:
        return config_text
    text = resume_checks.set_rounds(config_text, new, was=old)
    _write_atomic(run_dir / "config.toml", text, "the run's config")
    logger.warning("rounds changed from %d to %d by 'fedsim resume --rounds %d' (recorded in config.toml)",
                   old, new, new)
    print(f"fedsim: rounds set to {new} (was {old}); config.toml records the change")
    return text


def _execute(experiment: Experiment, run_dir: Path, state: ServerState, progress: bool, config_text: str,
             signals: "_Signals", kept_records: Optional[list[dict]] = None) -> dict:
    """Runs the remaining rounds; ``kept_records`` (on resume) are the metrics records already written."""
    config = experiment.config
    meta = resume_checks.checkpoint_meta(config_text)
    callbacks = []
    client_stores = getattr(experiment.process, "client_stores", [])
    if config.checkpoint.every:
        callbacks.append(_checkpointer(run_dir / "checkpoints", config, meta, client_stores))
    elif client_stores:
        # No checkpoint to resume from: only each client's newest state is needed.
        callbacks.append(lambda state, record: [store.prune(state.round_num) for store in client_stores])
    tensorboard = None
    if config.logging.tensorboard:
        log_dir = run_dir / "tensorboard"
        tensorboard = (TensorBoardWriter(log_dir) if kept_records is None
                       else TensorBoardWriter.rewritten(log_dir, kept_records))
        callbacks.append(tensorboard)
    try:
        with signals.running() as stop:
            result = simulate(
                experiment.process,
                experiment.train_data,
                rounds=config.rounds - state.round_num,
                sampler=experiment.sampler,
                eval_data=experiment.test_data,
                eval_every=config.evaluation.every,
                eval_clients=evaluation_sample(experiment.test_data, config.evaluation.clients, config.seed),
                metrics_path=run_dir / "metrics.jsonl",
                progress=progress,
                state=state,
                callbacks=callbacks,
                client_dataset_fn=experiment.client_dataset,
                should_stop=stop.is_set,
            )
    finally:
        if tensorboard:
            tensorboard.close()
    interrupted = result.state.round_num < config.rounds
    if interrupted and result.state.round_num > 0:
        _save(run_dir / "checkpoints", result.state, config, meta, client_stores)
    summary = summarize(read_metrics(run_dir / "metrics.jsonl"))
    summary["run_dir"] = str(run_dir)
    summary["interrupted"] = interrupted
    # The thread count changes float rounding (fedsim.runtime): keep it with the results.
    summary["threads"] = thread_settings()
    _write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n", "the run's summary")
    if interrupted:
        raise RunInterrupted(
            f"interrupted after round {result.state.round_num} of {config.rounds} ({signals.received_name}); "
            f"its checkpoint and metrics are written. Continue with: fedsim resume {run_dir}",
            signals.received or signal.SIGINT,
            result.state.round_num,
        )
    logger.info("run finished: %d rounds in %.1f s", summary["rounds"], summary["wall_time_s"])
    return summary


def _variable_namer(model):
    """Rewrites ``model_weights.trainable[3]`` in a message as that index plus the model's variable name."""
    collections = {"trainable": model.trainable_variables, "non_trainable": model.non_trainable_variables}

    def name(match: re.Match) -> str:
        variables = collections[match.group(1)]
        index = int(match.group(2))
        if index >= len(variables):
            return match.group(0)
        label = getattr(variables[index], "name", f"#{index}").removesuffix(":0")
        return f"{match.group(0)} (variable {label!r})"

    def listing(match: re.Match) -> str:
        names = [getattr(v, "name", "?").removesuffix(":0") for v in collections[match.group(1)]]
        return f"{match.group(0)} (this model's {match.group(1)} variables: {names})"

    def rewrite(message: str) -> str:
        message = re.sub(r"model_weights\.(trainable|non_trainable)\[(\d+)\]", name, message)
        return re.sub(r"model_weights\.(trainable|non_trainable): checkpoint has a tuple of \d+, "
                      r"the run has a tuple of \d+", listing, message)

    return rewrite


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Signals:
    """What SIGINT and SIGTERM (what job schedulers send) do at each stage of a run.

    During start-up (building data and model) a signal aborts at once with
    :class:`RunAborted`: there is nothing to save. Once rounds run
    (:meth:`running`), the first asks the run to stop after the round in
    progress, which then writes its checkpoint and metrics; a second aborts.
    Either way the CLI prints one line, never a traceback.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received: Optional[int] = None
        self._rounds_started = False

    @property
    def received_name(self) -> str:
        return signal.Signals(self.received or signal.SIGINT).name

    @contextlib.contextmanager
    def running(self) -> Iterator[threading.Event]:
        # Never reset: after the last round, a signal must not abort the final checkpoint and summary.
        self._rounds_started = True
        yield self.stop

    def handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if not self._rounds_started:
            raise RunAborted(f"{name} during start-up: no round ran in this process")
        if self.stop.is_set():
            raise RunAborted(f"aborted by a second {name} during a round; the run directory keeps every "
                             "round up to its newest checkpoint. Continue with 'fedsim resume'")
        self.received = signum
        self.stop.set()
        logger.warning("%s: stopping after this round (send it again to abort now)", name)


@contextlib.contextmanager
def _signals() -> Iterator[_Signals]:
    """Installs :class:`_Signals`' handler for SIGINT and SIGTERM, restoring the previous ones after."""
    handler = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signal handlers can only be set from the main thread
        return
    previous = {signum: signal.signal(signum, handler.handle) for signum in _STOP_SIGNALS}
    try:
        yield handler
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _checkpointer(directory: Path, config: RunConfig, meta: dict, client_stores=()):
    def save(state: ServerState, record: dict) -> None:
        round_num = state.round_num
        if round_num % config.checkpoint.every == 0 or round_num == config.rounds:
            _save(directory, state, config, meta, client_stores)

    return save


def _save(directory: Path, state: ServerState, config: RunConfig, meta: dict, client_stores=()) -> None:
    """Writes the checkpoint of ``state``, with ``meta`` (the run's config) that a resume checks.

    ``checkpoint.keep`` prunes the oldest checkpoints in ``directory`` whatever
    config wrote them. A new run never prunes another run's: it never starts
    in a directory holding checkpoints (:func:`prepare_run_dir` refuses it, or
    with ``--overwrite`` removes them first, explicitly).
    """
    path = save_checkpoint(directory, state.round_num, {"server_state": state}, meta=meta,
                           keep=config.checkpoint.keep)
    logger.info("checkpoint %s", path)
    for store in client_stores:
        # Per-client state older than the oldest kept checkpoint can never be read again.
        store.prune(min(r for r, _ in list_checkpoints(directory)))


@contextlib.contextmanager
def _run_log(run_dir: Path) -> Iterator[None]:
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
    elif isinstance(error, KeyboardInterrupt):
        level, message, exc_info = logging.ERROR, f"run aborted: {error or 'Ctrl-C'}", None
    else:
        level, message = logging.ERROR, f"run failed: {type(error).__name__}: {error}"
        exc_info = (type(error), error, error.__traceback__)
    return logger.makeRecord(logger.name, level, __file__, 0, message, None, exc_info)


def summarize(history: list[dict]) -> dict:
    """Rounds run, last train metrics, last evaluation metrics and wall time (sum of round times).

    ``final_train_num_examples`` is the examples the last round trained on: 0
    means no client trained (``final_train`` then holds no loss or accuracy,
    and says nothing about the model); an evaluation over no examples has a
    ``num_examples`` of 0 in ``final_eval`` and no loss or accuracy either.
    """
    last = history[-1] if history else {"train": {}}
    evaluations = [r["eval"] for r in history if "eval" in r]
    spreads = [r["eval_clients"] for r in history if r.get("eval_clients")]
    summary = {
        "rounds": len(history),
        "final_train": last["train"],
        "final_train_num_examples": last.get("num_examples"),
        "final_eval": evaluations[-1] if evaluations else {},
        "wall_time_s": sum(r.get("round_time_s", 0.0) for r in history),
    }
    if spreads:  # each metric's spread over the test clients at the last evaluation
        summary["final_eval_clients"] = spreads[-1]
    if "privacy" in last:  # the guarantee after the last round, with what it assumes
        summary["privacy"] = last["privacy"]
    return summary
