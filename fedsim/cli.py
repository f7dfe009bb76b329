"""The ``fedsim`` command line."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description="Federated-learning simulation.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run an experiment from a TOML config",
                              description="Run an experiment from a TOML config.")
    run.add_argument("config", help="path to the experiment's TOML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value, e.g. --set rounds=5 (repeatable)")
    run.add_argument("--out", help="run directory (default: runs/<time>-<algorithm>-<model>-seed<N>)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    resume = commands.add_parser("resume", help="continue a run from its newest readable checkpoint",
                                 description="Continue a run from its newest readable checkpoint.")
    resume.add_argument("run_dir")
    resume.add_argument("--quiet", action="store_true")
    return parser


def _print_summary(summary: dict) -> None:
    train, evaluation = summary["final_train"], summary["final_eval"]
    print(f"rounds:        {summary['rounds']}")
    if "loss" in train:
        print(f"train loss:    {train['loss']:.4f}")
    if "accuracy" in evaluation:
        print(f"test accuracy: {evaluation['accuracy']:.4f}")
    print(f"wall time:     {summary['wall_time_s']:.1f} s")
    print(f"run directory: {summary['run_dir']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from fedsim.experiment import ConfigError, RunDirectoryError, load_config, run_experiment

    try:
        if args.command == "run":
            config = load_config(args.config, args.overrides)
            _print_summary(run_experiment(config, args.out, progress=not args.quiet))
        if args.command == "resume":
            from fedsim.experiment.run import resume_run
            _print_summary(resume_run(args.run_dir, progress=not args.quiet))
    except (ConfigError, RunDirectoryError) as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
