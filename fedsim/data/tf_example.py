"""Flat feature mappings to and from serialized ``tf.train.Example`` protos.

``tf.train.Example`` stores only three kinds of lists: bytes, float32 and
int64. Strings go to bytes, floats to float32, integers and booleans to
int64; the parser casts back to the dtypes of the requested ``TensorSpec``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from fedsim.data.errors import ClientDataError

Features = Mapping[str, tf.TensorSpec]


def check_flat_features(element_spec: Any, where: str) -> Features:
    """``element_spec`` as a ``Mapping[str, TensorSpec]``, or a ``ClientDataError``."""
    if not isinstance(element_spec, Mapping) or not all(
        isinstance(key, str) and isinstance(spec, tf.TensorSpec)
        for key, spec in element_spec.items()
    ):
        raise ClientDataError(
            f"{where}: elements must be flat mappings of named tensors to become tf.train.Example "
            f"protos, got element_spec {element_spec}; map each element to a dict of tensors first"
        )
    for key, spec in element_spec.items():
        _stored_dtype(spec.dtype, f"{where}, feature {key!r}")
        if not spec.shape.is_fully_defined():
            raise ClientDataError(
                f"{where}, feature {key!r}: shape {spec.shape} is not fixed; tf.train.Example "
                "features here need a fixed shape, so pad or reshape the feature first"
            )
    return element_spec


def serialize_example(element: Mapping[str, Any]) -> bytes:
    """One element (``{name: tensor or array}``) as a serialized ``tf.train.Example``."""
    features = {key: _feature(np.asarray(value)) for key, value in element.items()}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def build_parser(features: Features) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """A function from one serialized proto (scalar ``tf.string``) to ``{name: tensor}``."""
    parse_spec = {
        key: tf.io.FixedLenFeature(
            shape=spec.shape, dtype=_stored_dtype(spec.dtype, f"feature {key!r}")
        )
        for key, spec in features.items()
    }

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_single_example(serialized, parse_spec)
        return {key: tf.cast(parsed[key], spec.dtype) for key, spec in features.items()}

    return parse


def build_batch_parser(features: Features) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """A function from serialized protos (a ``tf.string`` vector) to ``{name: [n, *shape] tensor}``.

    The same parse and casts as ``build_parser``, on every proto at once. It
    calls the parse op itself: eager ``tf.io.parse_example`` rebuilds its
    configuration in Python on every call, 0.41 ms against 0.17 ms for the
    op alone on a client of 4 examples of 60 floats (load 3.7).
    """
    stored = [_stored_dtype(spec.dtype, f"feature {name!r}") for name, spec in features.items()]
    op_arguments = dict(
        names=tf.constant([], tf.string),
        sparse_keys=tf.constant([], tf.string),
        dense_keys=tf.constant(list(features), tf.string),
        ragged_keys=tf.constant([], tf.string),
        dense_defaults=[tf.constant([], dtype) for dtype in stored],  # empty: the feature is required
        num_sparse=0,
        sparse_types=[],
        ragged_value_types=[],
        ragged_split_types=[],
        dense_shapes=[spec.shape for spec in features.values()],
    )

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        values = tf.raw_ops.ParseExampleV2(serialized=serialized, **op_arguments).dense_values
        return {name: tf.cast(value, spec.dtype) for (name, spec), value in zip(features.items(), values)}

    return parse


def _stored_dtype(dtype: tf.DType, where: str) -> tf.DType:
    if dtype == tf.string:
        return tf.string
    if dtype.is_floating:
        return tf.float32
    if dtype.is_integer or dtype == tf.bool:
        return tf.int64
    raise ClientDataError(f"{where}: dtype {dtype.name} cannot be stored in a tf.train.Example")


def _feature(value: np.ndarray) -> tf.train.Feature:
    flat = value.reshape(-1)
    if value.dtype.kind in "SUO":
        items = [
            item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in flat.tolist()
        ]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=items))
    if value.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=flat.astype(np.float32)))
    if value.dtype.kind in "iub":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=flat.astype(np.int64)))
    raise ClientDataError(f"dtype {value.dtype} cannot be stored in a tf.train.Example")
