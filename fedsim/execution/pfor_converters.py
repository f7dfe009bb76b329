"""A ``tf.vectorized_map`` converter TensorFlow lacks: ``Bitcast``.

Keras 3's ``ops.argmax`` (which ``SparseCategoricalAccuracy`` uses) calls
``tf.bitcast`` to tell -0.0 from 0.0. pfor has no converter for it, so under
``tf.vectorized_map`` it falls back to a ``while_loop`` over clients and logs
"Using a while_loop for converting Bitcast" on every trace. A bitcast acts on
each element's bytes and, when the sizes differ, on the last axis only, so
bitcasting the stacked tensor (client axis first) is the per-client bitcast
stacked: the converter is one op.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.python.ops.parallel_for import pfor  # TF's own converter registry (no public API)


def _convert_bitcast(pfor_input):
    stacked = pfor_input.stacked_input(0)
    return pfor.wrap(tf.bitcast(stacked, pfor_input.get_attr("type")), True)


def register() -> None:
    """Registers the converters once (a TensorFlow that has its own keeps it)."""
    if "Bitcast" not in pfor._pfor_converter_registry:  # noqa: SLF001
        pfor.RegisterPFor("Bitcast")(_convert_bitcast)
