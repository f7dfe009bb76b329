"""Checks of a round's input that name the client at fault."""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class ClientDatasetError(ValueError):
    """A client's dataset does not fit the model (structure, dtype or shape)."""


def _describe(spec: Any) -> str:
    return f"{spec.dtype.name} {list(spec.shape)}" if isinstance(spec, tf.TensorSpec) else repr(spec)


def check_element_spec(client_id: Any, element_spec: Any, input_spec: Any) -> None:
    """Raises ``ClientDatasetError`` naming the client and field when batches will not fit ``input_spec``."""
    try:
        tf.nest.assert_same_structure(element_spec, input_spec, check_types=False)
    except (ValueError, TypeError):
        raise ClientDatasetError(
            f"client {client_id!r}: its dataset yields {element_spec}, but the model's input_spec is "
            f"{input_spec}; map the dataset to the model's structure"
        ) from None
    # One flattening order for both (keras.tree), so paths and specs line up.
    pairs = zip(keras.tree.flatten_with_path(input_spec), keras.tree.flatten(element_spec))
    for (path, expected), got in pairs:
        if not isinstance(got, tf.TensorSpec) or not isinstance(expected, tf.TensorSpec):
            continue
        if got.dtype != expected.dtype or not expected.shape.is_compatible_with(got.shape):
            field = "/".join(str(p) for p in path) or "batch"
            raise ClientDatasetError(
                f"client {client_id!r}: batch field {field!r} is {_describe(got)}, the model expects "
                f"{_describe(expected)}; cast or reshape that client's data (e.g. with dataset.map) "
                "or fix the model's input_spec"
            )
