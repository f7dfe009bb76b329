"""Which cohorts train under XLA: the rules ``CohortTrainer`` applies when ``xla`` is left unset.

XLA batches step ``k`` of every client into one fused computation; the graph
client loop trains each client on its own batches at their real size. These
rules say when XLA would change the results or would not pay.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from fedsim.models.keras_model import split_batch

XLA_MAX_PARAMETERS_ON_CPU = 10_000


def xla_result_blocker(model: Any):
    """Why XLA would not give the sequential executor's result for this model, or ``None``.

    XLA trains every batch padded to one size: padded rows would enter batch
    statistics (BatchNorm), and random draws (Dropout's masks) would take the
    padded shape and differ from the sequential draws. The client loop trains
    each batch at its real size, as the sequential executor does.
    """
    for layer in model.keras_model._flatten_layers():  # noqa: SLF001  (Keras's own layer walk)
        if any("BatchNormalization" in cls.__name__ for cls in type(layer).__mro__):
            return f"layer {layer.name!r} takes batch statistics ({type(layer).__name__})"
        if getattr(layer, "_seed_generators", None):
            return f"layer {layer.name!r} draws random numbers ({type(layer).__name__})"
    return None


def xla_blocker(model: Any):
    """Why the cohort of this ``KerasVariableModel`` should not train under XLA, or ``None``.

    XLA batches step ``k`` of every client into one fused computation, which
    wins where a client's step is too small to keep a core busy; the graph
    client loop gives the sequential executor's result bit for bit (XLA's
    differs by float rounding, which a ReLU network amplifies: 1.4e-5 after
    3 rounds for the benchmark's mlp). Measured on CPU with one thread per op
    (``fedsim.runtime``), 10-client cohorts, XLA vs client loop: logreg
    (610 parameters) 2.3 vs 7.8 ms per round; mlp (54k) 9.9 vs 9.9 ms equal,
    11.8 vs 10.7 ms ragged, 88 vs 90 ms for 100 clients. So on CPU only
    models of at most ``XLA_MAX_PARAMETERS_ON_CPU`` trainable parameters use
    XLA (on GPUs, batching clients fills the device, so every dense model
    does). Convolutions never do: pfor turns a convolution with per-client
    filters into a loop over clients, which XLA runs about 20x slower. Nor do
    models whose results XLA would change (``xla_result_blocker``).
    """
    reason = xla_result_blocker(model)
    if reason is not None:
        return reason
    for layer in model.keras_model._flatten_layers():  # noqa: SLF001  (Keras's own layer walk)
        if any("Conv" in cls.__name__ for cls in type(layer).__mro__):
            return f"layer {layer.name!r} is a convolution ({type(layer).__name__})"
    parameters = sum(int(np.prod(v.shape)) for v in model.keras_model.trainable_variables)
    if parameters > XLA_MAX_PARAMETERS_ON_CPU and not tf.config.list_logical_devices("GPU"):
        return (f"{parameters:,} trainable parameters, more than {XLA_MAX_PARAMETERS_ON_CPU:,}: on CPU the "
                "client loop is as fast and gives the sequential result bit for bit")
    python_ops = _python_ops(model)
    if python_ops:
        return (f"the model calls Python ({', '.join(python_ops)}: tf.numpy_function or tf.py_function), "
                "which XLA cannot compile")
    return None


_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def _python_ops(model: Any) -> list[str]:
    """The Python-calling ops in the model's training forward pass (one trace, no execution)."""
    x_spec = split_batch(model.input_spec)[0]
    traced = tf.function(lambda x: model.keras_model(x, training=True)).get_concrete_function(x_spec)
    graph = traced.graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    return sorted(ops & _PYTHON_OPS)
