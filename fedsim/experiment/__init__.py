"""Experiments: TOML configs, building blocks from them, run directories, checkpoints and reports.

Every public name is imported on first use (PEP 562), as in ``fedsim``: the
commands that only read a run directory (``fedsim plot``, ``compare``,
``privacy``) import ``fedsim.experiment.report`` and must not pay for
TensorFlow, which the builders and the run loop load.
"""
import importlib as _importlib

_EXPORTS = {
    "fedsim.experiment.blocks": ["RunConfig"],
    "fedsim.experiment.build": ["Experiment", "build_experiment"],
    "fedsim.experiment.config": ["ConfigError", "config_from_dict", "config_to_toml", "load_config"],
    "fedsim.experiment.run": ["RunDirectoryError", "RunInterrupted", "resume_run", "run_experiment"],
}

# The classes of EXPECTED_ERRORS, each from the module that defines it (or its
# package's public surface), imported when EXPECTED_ERRORS is first read.
_ERROR_MODULES = {
    "AccountingError": "fedsim.privacy",
    "AggregatorConfigError": "fedsim.aggregators",
    "ParticipationError": "fedsim.privacy",
    "PrivacyReportError": "fedsim.privacy.report",
    "SamplingError": "fedsim.simulation.sampling",
    "AlgorithmBuildError": "fedsim.algorithms.registry",
    "CheckpointError": "fedsim.checkpoint",
    "ClientDataError": "fedsim.data",
    "ClientDatasetError": "fedsim.learning.validation",
    "ClientFailure": "fedsim.learning.faults",
    "ModelFnError": "fedsim.models.model_fn",
    "NonFiniteUpdateError": "fedsim.learning.faults",
    "ConfigError": "fedsim.experiment.config",
    "DataBuildError": "fedsim.experiment.build_data",
    "MetricsFileError": "fedsim.experiment.metrics_file",
    "ModelBuildError": "fedsim.experiment.custom_code",
    "ReportError": "fedsim.experiment.report",
    "RunDirectoryError": "fedsim.experiment.run",
}

# Importable from here as before (``from fedsim.experiment import DataBuildError``),
# though only the names in __all__ are the documented surface.
_MODULE_OF = {
    **_ERROR_MODULES,
    **{name: module for module, names in _EXPORTS.items() for name in names},
}

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


def _expected_errors() -> tuple:
    """Errors caused by the user's input (config, files, run directories, data that
    does not fit the model) or by the run's fault policy; the CLI prints their
    message instead of a traceback."""
    return tuple(getattr(_importlib.import_module(module), name) for name, module in _ERROR_MODULES.items())


def __getattr__(name: str):
    if name == "EXPECTED_ERRORS":
        value = _expected_errors()
    elif name in _MODULE_OF:
        value = getattr(_importlib.import_module(_MODULE_OF[name]), name)
    else:
        raise AttributeError(f"module 'fedsim.experiment' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_MODULE_OF))
