"""Experiments: TOML configs, building blocks from them, and run directories."""
from fedsim.experiment.blocks import RunConfig
from fedsim.experiment.build import Experiment, build_experiment
from fedsim.experiment.config import ConfigError, config_from_dict, config_to_toml, load_config
from fedsim.experiment.run import RunDirectoryError, run_experiment

__all__ = [
    "ConfigError",
    "Experiment",
    "RunConfig",
    "RunDirectoryError",
    "build_experiment",
    "config_from_dict",
    "config_to_toml",
    "load_config",
    "run_experiment",
]
