"""Federated operators over client-placed values, for older-interface models.

An older-interface model aggregates its ``report_local_outputs()`` across the
cohort with its ``federated_output_computation``. There the argument is the
cohort's local outputs, *placed at the clients*: fedsim passes a
:class:`ClientValues`, whose fields are reached like those of one client's
output (``local_outputs.loss`` or ``local_outputs["loss"]``), and which the
operators below reduce to a server value (a NumPy array)::

    def federated_output_computation(local_outputs):
        return {
            "num_examples": fedsim.federated_sum(local_outputs.num_examples),
            "loss": fedsim.federated_mean(local_outputs.loss, weight=local_outputs.num_examples),
        }
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf


class FederatedTypeError(TypeError):
    """Raised when a federated operator gets a value that is not client-placed."""


class ClientValues:
    """One value per client of the cohort, all of the same structure."""

    def __init__(self, values: Sequence[Any]):
        self._values = [tf.nest.map_structure(np.asarray, v) for v in values]

    @property
    def values(self) -> list[Any]:
        """The per-client values, in cohort order."""
        return list(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> "ClientValues":
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return ClientValues([_field(v, name) for v in self._values])
        except (KeyError, AttributeError) as error:
            raise AttributeError(
                f"the clients' local outputs have no field {name!r}; "
                f"their structure is {_describe(self._values)}"
            ) from error

    def __getitem__(self, key: Any) -> "ClientValues":
        try:
            return ClientValues([v[key] for v in self._values])
        except (KeyError, IndexError, TypeError) as error:
            raise KeyError(
                f"the clients' local outputs have no entry {key!r}; "
                f"their structure is {_describe(self._values)}"
            ) from error

    def __repr__(self) -> str:
        return f"ClientValues({len(self)} clients)"


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value[name]
    return getattr(value, name)


def _describe(values: list[Any]) -> str:
    if not values:
        return "empty (no clients)"
    first = values[0]
    if isinstance(first, dict):
        return f"a mapping with keys {list(first)}"
    return type(first).__name__


def _client_placed(value: Any, operator: str) -> ClientValues:
    if not isinstance(value, ClientValues):
        raise FederatedTypeError(
            f"{operator} takes a client-placed value (a field of the local outputs passed to "
            f"federated_output_computation), got {type(value).__name__}"
        )
    if len(value) == 0:
        raise FederatedTypeError(f"{operator} over an empty cohort has no value")
    return value


def _stack(values: ClientValues) -> Any:
    return tf.nest.map_structure(lambda *xs: np.stack(xs), *values.values)


def federated_sum(value: ClientValues) -> Any:
    """The sum over clients, structure by structure."""
    stacked = _stack(_client_placed(value, "federated_sum"))
    return tf.nest.map_structure(lambda x: x.sum(axis=0), stacked)


def federated_mean(value: ClientValues, weight: Optional[ClientValues] = None) -> Any:
    """The (optionally weighted) mean over clients; weights are per client scalars."""
    value = _client_placed(value, "federated_mean")
    if weight is None:
        weights = np.ones(len(value), dtype=np.float64)
    else:
        weights = np.asarray(_client_placed(weight, "federated_mean weight").values, np.float64)
        if weights.shape != (len(value),):
            raise FederatedTypeError(
                f"federated_mean weight must be one scalar per client, got shape {weights.shape}"
            )
    total = weights.sum()
    if total <= 0:
        raise FederatedTypeError(
            f"federated_mean weights sum to {total}; at least one client needs a positive weight"
        )

    def mean(stacked: np.ndarray) -> np.ndarray:
        w = weights.reshape((-1,) + (1,) * (stacked.ndim - 1))
        return (w * stacked.astype(np.float64)).sum(axis=0) / total

    return tf.nest.map_structure(mean, _stack(value))


def federated_min(value: ClientValues) -> Any:
    """The element-wise minimum over clients."""
    stacked = _stack(_client_placed(value, "federated_min"))
    return tf.nest.map_structure(lambda x: x.min(axis=0), stacked)


def federated_max(value: ClientValues) -> Any:
    """The element-wise maximum over clients."""
    stacked = _stack(_client_placed(value, "federated_max"))
    return tf.nest.map_structure(lambda x: x.max(axis=0), stacked)
