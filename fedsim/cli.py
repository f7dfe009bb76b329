"""The ``fedsim`` command line: run, resume, data, plot, compare, privacy, sweep.

``plot``, ``compare`` and ``privacy`` only read a run directory's files, so
they never import TensorFlow (a second of start-up or more, and C++ notices
on stderr); the other commands start it with its start-up lines muted.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value, e.g. --set rounds=5 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_allow_module(parser)


def _add_allow_module(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-module", dest="allow_modules", action="append", default=[], metavar="NAME",
                        help="allow the config's custom model function from module NAME (and its "
                             "submodules): needed for a standard-library or built-in one, e.g. --allow-module "
                             "math, and on resume in place of --trust (repeatable)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description="Federated-learning simulation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages (INFO) to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run an experiment from a TOML config",
                              description="Run an experiment from a TOML config into a run directory.")
    run.add_argument("config", help="path to the experiment's TOML file")
    run.add_argument("--out", help="run directory (default: runs/<time>-<algorithm>-<model>-seed<N>); one "
                                   "holding a run's files (config.toml, metrics.jsonl, checkpoints/, ...) is "
                                   "refused")
    run.add_argument("--overwrite", action="store_true",
                     help="remove the run files already in --out first (only those: config.toml, "
                          "metrics.jsonl, summary.json, run.log, checkpoints/, tensorboard/, client state)")
    _add_run_options(run)

    resume = commands.add_parser(
        "resume", help="continue a run from its newest readable checkpoint",
        description="Continue a run from its newest readable checkpoint (unreadable ones are skipped, "
                    "with the reason); metrics past that checkpoint are dropped and those rounds rerun.")
    resume.add_argument("run_dir", help="the run directory of 'fedsim run'")
    resume.add_argument("--rounds", type=int, metavar="N",
                        help="run until round N (extends the run; written into config.toml, the one change "
                             "to config.toml a resume accepts)")
    resume.add_argument("--quiet", action="store_true", help="no progress bar")
    resume.add_argument("--trust", action="store_true",
                        help="run the custom model function the run directory's config.toml names (needed "
                             "for one: a run directory may come from someone else)")
    _add_allow_module(resume)

    data = commands.add_parser(
        "data", help="build a config's population only and print its statistics",
        description="Build the population of a config (its data block and seed, as 'fedsim run' would; "
                    "no model, no training) and print per split: clients, examples per client, distinct "
                    "labels per client and label entropy per client (bits).")
    data.add_argument("config", help="path to the experiment's TOML file")
    data.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                      help="override a config value, e.g. --set data.partitioner.alpha=0.1 (repeatable)")
    data.add_argument("--plot", metavar="FILE.png", help="also plot the train clients' label proportions")
    data.add_argument("--clients", type=int, default=50, metavar="N",
                      help="clients shown in the --plot, the first N (default: 50)")

    plot = commands.add_parser("plot", help="plot a metric of several runs on one figure",
                               description="Plot a metric per round of several runs on one PNG figure.")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--metric", default="eval/accuracy",
                      help="section/name of a metric, e.g. train/loss (default: eval/accuracy)")
    plot.add_argument("--out", default="plot.png", help="PNG file to write (default: plot.png)")
    plot.add_argument("--size", type=int, nargs=2, default=(800, 500), metavar=("WIDTH", "HEIGHT"),
                      help="image size in pixels (default: 800 500)")

    compare = commands.add_parser(
        "compare", help="markdown table of final and best metrics of several runs",
        description="Print a markdown table of several runs: final and best metrics, wall time, "
                    "and the rounds and seconds each needed to reach each target.")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--target", action="append", default=[], metavar="NAME=VALUE",
                         help="e.g. eval/accuracy=0.8 (losses: at most VALUE; repeatable)")

    privacy = commands.add_parser(
        "privacy", help="what a run's (epsilon, delta) rests on",
        description="Print a run's privacy mechanism, its parameters, the sampling and neighbouring relation "
                    "it was accounted under, the accountant, and epsilon over the rounds.")
    privacy.add_argument("run_dir", help="the run directory of 'fedsim run'")

    sweep = commands.add_parser(
        "sweep", help="run a grid of configs over several seeds",
        description="Run every combination of the --grid values, each with --seeds seeds, and write "
                    "results.md and results.json (mean and std over seeds) into the sweep directory.")
    sweep.add_argument("config", help="path to the base TOML config")
    sweep.add_argument("--grid", action="append", default=[], required=True, metavar="KEY.PATH=V1,V2",
                       help="values to try for one key, e.g. --grid client_optimizer.learning_rate=0.01,0.1")
    sweep.add_argument("--seeds", type=int, default=1, help="seeds per grid point: seed, seed+1, ... (default 1)")
    sweep.add_argument("--out", help="sweep directory (default: runs/sweep-<time>)")
    _add_run_options(sweep)
    return parser


def _print_summary(summary: dict) -> None:
    """The run's summary; a last round or evaluation over no examples says so instead of a number."""
    train, evaluation = summary["final_train"], summary["final_eval"]
    print(f"rounds:        {summary['rounds']}")
    if summary.get("final_train_num_examples") == 0:
        print("train loss:    no examples (no client trained in the last round)")
    elif "loss" in train:
        print(f"train loss:    {train['loss']:.4f}")
    if evaluation.get("num_examples") == 0:
        print("test accuracy: no examples (the evaluated test clients hold none)")
    elif "accuracy" in evaluation:
        spread = summary.get("final_eval_clients", {}).get("accuracy")
        clients = "" if not spread else (
            f"  (per client: p10 {spread['p10']:.4f}, median {spread['p50']:.4f}, "
            f"worst {spread['worst']:.4f} {spread['worst_client']})")
        print(f"test accuracy: {evaluation['accuracy']:.4f}{clients}")
    privacy = summary.get("privacy")
    if privacy:
        print(f"privacy:       ({privacy['epsilon']:.4g}, {privacy['delta']:g})-DP, {privacy['accountant']}, "
              f"{privacy['sampling']} sampling, {privacy['relation']} (details: fedsim privacy RUN_DIR)")
    print(f"wall time:     {summary['wall_time_s']:.1f} s")
    print(f"run directory: {summary['run_dir']}")


# Commands that only read files: answered without TensorFlow.
_FILE_COMMANDS = ("plot", "compare", "privacy")


def _file_errors() -> tuple[type[Exception], ...]:
    """The user errors of the file-reading commands, from modules that do not import TensorFlow."""
    from fedsim.experiment.metrics_file import MetricsFileError
    from fedsim.experiment.report import ReportError
    from fedsim.privacy.report import PrivacyReportError

    return (MetricsFileError, ReportError, PrivacyReportError)


def _dispatch_file_command(args: argparse.Namespace) -> None:
    if args.command == "privacy":
        from fedsim.privacy.report import privacy_report

        print(privacy_report(args.run_dir), end="")
        return
    from fedsim.experiment import report

    if args.command == "plot":
        print(report.plot_runs(args.run_dirs, args.metric, args.out, tuple(args.size)))
    elif args.command == "compare":
        targets = [report.Target.parse(t) for t in args.target]
        print(report.compare_table(args.run_dirs, targets), end="")


def _describe_data(args: argparse.Namespace) -> None:
    from fedsim import experiment
    from fedsim.experiment import population

    config = experiment.load_config(args.config, args.overrides)
    described = population.describe_population(config)
    print(population.format_report(described), end="")
    if args.plot:
        out = population.plot_label_distribution(described.train, described.num_classes, args.plot, args.clients,
                                                  title=f"train label distribution: {args.config}")
        print(f"plot: {out}")


def _dispatch(args: argparse.Namespace) -> None:
    from fedsim import experiment
    from fedsim.experiment import sweep

    if args.command == "run":
        config = experiment.load_config(args.config, args.overrides)
        if args.overwrite and args.out:
            _refuse_overwriting_the_config(args.config, args.out)
        _print_summary(experiment.run_experiment(config, args.out, progress=not args.quiet,
                                                 allow_modules=args.allow_modules, overwrite=args.overwrite))
    elif args.command == "resume":
        _print_summary(experiment.resume_run(args.run_dir, progress=not args.quiet, rounds=args.rounds,
                                             trust=args.trust, allow_modules=args.allow_modules))
    elif args.command == "data":
        _describe_data(args)
    elif args.command == "sweep":
        grid = sweep.parse_grid(args.grid)
        out = sweep.run_sweep(args.config, grid, args.seeds, args.out, args.overrides, progress=not args.quiet,
                              allow_modules=args.allow_modules)
        print((out / "results.md").read_text(encoding="utf-8"), end="")
        print(f"sweep directory: {out}")


def _refuse_overwriting_the_config(config: str, out: str) -> None:
    """``run CONFIG --out DIR --overwrite`` where CONFIG is DIR/config.toml would delete the user's own config."""
    from fedsim.experiment import RunDirectoryError

    target = Path(out) / "config.toml"
    if target.exists() and target.resolve() == Path(config).resolve():
        raise RunDirectoryError(
            f"--overwrite would remove {str(target)!r}, the config this command runs; move your config out of "
            "--out (or choose another --out): a run writes its own config.toml there"
        )


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """Silences file descriptor 2 for C++ code, leaving Python's own stderr usable after."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_tensorflow_quietly(verbose: bool = False) -> None:
    """Imports TensorFlow and probes its devices with file descriptor 2 muted, unless ``verbose``.

    TensorFlow's C++ runtime prints start-up notices (oneDNN, "Could not find
    cuda drivers") while it is imported, before absl logging is initialised,
    where TF_CPP_MIN_LOG_LEVEL cannot reach them, and "failed call to cuInit"
    (an error-level line) when it first lists devices, on every machine
    without a GPU. They would bury the progress bar and say nothing about
    the run, so both happen here, muted. Listing physical devices does not
    start the runtime: thread pools and device configuration can still be
    set afterwards. Import errors still raise.
    """
    if verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return  # asked to see everything: TensorFlow starts when first used, loudly
    if "tensorflow" in sys.modules:
        return
    with _native_stderr_muted():
        import tensorflow as tf

        tf.config.list_physical_devices()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # The level goes on the handler: a run raises fedsim's logger to INFO for run.log,
    # and those records must still stay off the terminal unless --verbose.
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.basicConfig(handlers=[console], format="%(levelname)s %(name)s: %(message)s")
    if args.command in _FILE_COMMANDS:
        try:
            _dispatch_file_command(args)
        except _file_errors() as error:
            print(f"fedsim: error: {error}", file=sys.stderr)
            return 2
        return 0

    if args.command in ("run", "sweep"):
        # Missing files, a cohort larger than the population, a module that may not run: said
        # before TensorFlow takes seconds to start (the full load after it reports everything else).
        from fedsim.data.errors import ClientDataError  # e.g. a LEAF split whose users cannot be counted
        from fedsim.experiment.config_source import ConfigError
        from fedsim.experiment.early import check_early

        try:
            check_early(args.config, args.overrides, args.allow_modules)
        except (ConfigError, ClientDataError) as error:
            print(f"fedsim: error: {error}", file=sys.stderr)
            return 2
    try:
        _import_tensorflow_quietly(args.verbose)
        from fedsim.data.statistics import StatisticsError
        from fedsim.experiment import EXPECTED_ERRORS, RunInterrupted
        from fedsim.experiment.signals import interrupt_behind
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow loads: nothing has started
        print("fedsim: interrupted during start-up; nothing was run", file=sys.stderr)
        return 130

    try:
        _dispatch(args)
    except RunInterrupted as interrupted:
        print(f"fedsim: {interrupted}", file=sys.stderr)
        return interrupted.exit_code  # the shell's code for a command ended by that signal (130, 143)
    except KeyboardInterrupt as aborted:  # start-up, or a second signal (fedsim.experiment.run.RunAborted)
        print(f"fedsim: {aborted or 'interrupted'}", file=sys.stderr)
        return 130
    except (*EXPECTED_ERRORS, StatisticsError) as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a signal that landed inside a C call comes back wrapped (SystemError)
        aborted = interrupt_behind(error)
        if aborted is None:
            raise
        print(f"fedsim: {aborted or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
