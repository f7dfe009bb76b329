"""Data sets: the embedded Synthetic(alpha, beta) and loaders for real federated data sets.

Names are imported on first use (PEP 562): ``fedsim.datasets.cache_files``
serves a config's early checks, before TensorFlow starts.
"""
import importlib as _importlib

__all__ = ["generate_synthetic", "load_synthetic"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'fedsim.datasets' has no attribute {name!r}")
    value = getattr(_importlib.import_module("fedsim.datasets.synthetic"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
