"""Privacy: what a run's sampling proves (``Participation``) and the accounting of its mechanism.

The mechanisms themselves are aggregator rules (``fedsim.aggregators``:
``dp_fedavg``, ``dp_ftrl``, ``distributed_dp``); ``fedsim.privacy.mechanism``
finds the one in a chain and reports its epsilon after every round.

Names are imported on first use (PEP 562): ``fedsim privacy RUN_DIR`` reads
``fedsim.privacy.report`` (two small files) and must not wait for
``dp_accounting`` and TensorFlow, which the accountant needs.
"""
import importlib as _importlib

# public name -> (module, attribute)
_EXPORTS = {
    "AccountingError": ("fedsim.privacy.accounting", "AccountingError"),
    "find_noise_multiplier": ("fedsim.privacy.accounting", "find_noise_multiplier"),
    "privacy_report": ("fedsim.privacy.mechanism", "report"),
    "Participation": ("fedsim.privacy.participation", "Participation"),
    "ParticipationError": ("fedsim.privacy.participation", "ParticipationError"),
}

__all__ = ["AccountingError", "Participation", "ParticipationError", "find_noise_multiplier", "privacy_report"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fedsim.privacy' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(_importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
