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

import json
import logging
import re
import signal
from pathlib import Path
from typing import Optional, Sequence

import attrs

from fedsim.checkpoint import list_checkpoints, remove_temporary, save_checkpoint
from fedsim.experiment import preflight, resume_checks
from fedsim.experiment.blocks import RunConfig
from fedsim.experiment.build import Experiment, build_experiment
from fedsim.experiment.config import config_to_toml, load_config
# RunDirectoryError is defined with the lock, re-exported here for the CLI's list of expected errors.
from fedsim.experiment.lock import RunDirectoryError, RunDirectoryLocked, lock_run_dir  # noqa: F401
from fedsim.experiment.metrics_file import read_metrics, truncate_metrics
from fedsim.experiment.run_dir import (  # noqa: F401 (RUN_OUTPUTS and the errors: importable from here)
    RUN_OUTPUTS, START_MESSAGE, RunDirectoryIsAFileError, RunOutputsExistError, RunOutputTypeError,
    default_run_dir, no_empty_metrics, prepare_run_dir, remove_outputs, run_log, write_atomic,
)
from fedsim.experiment.signals import RunAborted, RunInterrupted, StopSignals, handling_signals  # noqa: F401
from fedsim.experiment.tensorboard import TensorBoardWriter
from fedsim.learning.process import ServerState
from fedsim.runtime import thread_settings
from fedsim.simulation import simulate
from fedsim.simulation.loop import evaluation_sample

logger = logging.getLogger(__name__)


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
    with handling_signals() as signals, lock_run_dir(run_dir):
        # Again, owning it: another process may have started a run meanwhile.
        remove_outputs(prepare_run_dir(run_dir, overwrite))
        with run_log(run_dir), no_empty_metrics(run_dir / "metrics.jsonl"):
            logger.info(START_MESSAGE, run_dir)  # first: it marks run.log as a run's (see prepare_run_dir)
            config_text = config_to_toml(config)
            write_atomic(run_dir / "config.toml", config_text, "the run's config")
            experiment = build_experiment(config, state_dir=run_dir)
            # Populations whose size only the loaded data tells (TFF's files): still before round 1.
            preflight.check_population(config, len(experiment.train_data.client_ids))
            return _execute(experiment, run_dir, experiment.process.initialize(), progress, config_text, signals)


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
    with handling_signals() as signals, lock_run_dir(run_dir):
        config_text = (run_dir / "config.toml").read_text(encoding="utf-8")
        config = load_config(run_dir / "config.toml")
        preflight.check_resume_trust(config.model, run_dir / "config.toml", trust, allow_modules)
        preflight.check_custom_module(config.model, allow_modules)
        remove_temporary(run_dir / "checkpoints")
        with run_log(run_dir):
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
             signals: "StopSignals") -> dict:
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
    write_atomic(run_dir / "config.toml", text, "the run's config")
    logger.warning("rounds changed from %d to %d by 'fedsim resume --rounds %d' (recorded in config.toml)",
                   old, new, new)
    print(f"fedsim: rounds set to {new} (was {old}); config.toml records the change")
    return text


def _execute(experiment: Experiment, run_dir: Path, state: ServerState, progress: bool, config_text: str,
             signals: "StopSignals", kept_records: Optional[list[dict]] = None) -> dict:
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
                prepare_dataset_fn=experiment.prepare_dataset,
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
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n", "the run's summary")
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
