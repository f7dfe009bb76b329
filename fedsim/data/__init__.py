"""Client data: the population abstraction, file readers, partitioners, preprocessing.

Names are imported on first use (PEP 562), as in ``fedsim``: the readers of
file headers (``fedsim.data.leaf.count_leaf_users``, ``fedsim.data.errors``)
serve a config's early checks, before TensorFlow starts.
"""
import importlib as _importlib

_EXPORTS = {
    "fedsim.data.client_data": ["ClientData"],
    "fedsim.data.client_ids": ["ClientIds", "RangeIds"],
    "fedsim.data.errors": ["ClientDataError", "DatasetNotFoundError"],
    "fedsim.data.sql": ["read_sql_client_data", "write_sql_client_data"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fedsim.data' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
