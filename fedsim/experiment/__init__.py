"""Experiments: TOML configs, building blocks from them, run directories, checkpoints and reports."""
from fedsim.checkpoint import CheckpointError
from fedsim.data import ClientDataError
from fedsim.experiment.blocks import RunConfig
from fedsim.experiment.build import Experiment, build_experiment
from fedsim.algorithms.registry import AlgorithmBuildError
from fedsim.experiment.build_data import DataBuildError
from fedsim.experiment.build_model import ModelBuildError
from fedsim.experiment.config import ConfigError, config_from_dict, config_to_toml, load_config
from fedsim.experiment.metrics_file import MetricsFileError
from fedsim.experiment.report import ReportError
from fedsim.experiment.run import RunDirectoryError, RunInterrupted, resume_run, run_experiment
from fedsim.learning.faults import ClientFailure, NonFiniteUpdateError
from fedsim.learning.validation import ClientDatasetError
from fedsim.models.model_fn import ModelFnError
from fedsim.aggregators import AggregatorConfigError
from fedsim.privacy import AccountingError, ParticipationError
from fedsim.privacy.report import PrivacyReportError
from fedsim.simulation.sampling import SamplingError

#: Errors caused by the user's input (config, files, run directories, data that
#: does not fit the model) or by the run's fault policy; the CLI prints their
#: message instead of a traceback.
EXPECTED_ERRORS = (
    AccountingError,
    AggregatorConfigError,
    ParticipationError,
    PrivacyReportError,
    SamplingError,
    AlgorithmBuildError,
    CheckpointError,
    ClientDataError,
    ClientDatasetError,
    ClientFailure,
    ModelFnError,
    NonFiniteUpdateError,
    ConfigError,
    DataBuildError,
    MetricsFileError,
    ModelBuildError,
    ReportError,
    RunDirectoryError,
)

__all__ = [
    "EXPECTED_ERRORS",
    "ConfigError",
    "Experiment",
    "RunConfig",
    "RunDirectoryError",
    "RunInterrupted",
    "build_experiment",
    "config_from_dict",
    "config_to_toml",
    "load_config",
    "resume_run",
    "run_experiment",
]
