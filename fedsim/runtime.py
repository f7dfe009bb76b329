"""How many threads TensorFlow splits each op over: fedsim's default, set when fedsim is imported.

fedsim trains clients side by side: the vectorized executor's graph client
loop (convolutional and larger dense models) keeps ``CLIENTS_IN_FLIGHT``
clients in flight, and
TensorFlow's inter-op threads overlap independent ops of one client. By
default TensorFlow also splits every op over all cores, so on a small
machine the cores are oversubscribed and small-batch ops pay for splitting.
fedsim therefore gives each op ``cores // CLIENTS_IN_FLIGHT`` threads (at
least one), so that the clients in flight together use every core once.

Measured on the 2-core development machine (``benchmarks/RESULTS.md``), one
intra-op thread against TensorFlow's two, seconds per round of the shared
workload: CNN vectorized 0.41 vs 0.51 (equal clients), CNN sequential 1.09
vs 1.39; mlp and logreg unchanged or faster.

TensorFlow reads ``TF_NUM_INTRAOP_THREADS`` once, when it starts its runtime
(the first op), so the default goes into the environment on
``import fedsim`` and only when the variable is unset. To choose yourself,
set it before starting Python (``TF_NUM_INTRAOP_THREADS=0`` is TensorFlow's
own default, one thread per core) or call
``tf.config.threading.set_intra_op_parallelism_threads`` before the first op.
The thread count changes float rounding, so record it with results: a CNN's
weights after 3 rounds differ by ~1e-3 between one and two threads per op.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import MutableMapping, Optional

CLIENTS_IN_FLIGHT = 2  # clients the vectorized executor trains at once on the graph path
INTRA_OP_VARIABLE = "TF_NUM_INTRAOP_THREADS"
INTER_OP_VARIABLE = "TF_NUM_INTEROP_THREADS"

logger = logging.getLogger(__name__)


def schedulable_cores() -> int:
    """Cores this process may run on (its CPU affinity, as TensorFlow counts them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_intra_op_threads(cores: Optional[int] = None) -> int:
    """fedsim's threads per op on ``cores`` cores (default: this process's): ``cores // CLIENTS_IN_FLIGHT``, at least 1."""
    cores = schedulable_cores() if cores is None else cores
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores={cores!r} must be a positive int")
    return max(1, cores // CLIENTS_IN_FLIGHT)


def apply_default_threads(environ: MutableMapping[str, str] = os.environ, modules=sys.modules) -> bool:
    """Gives TensorFlow ``default_intra_op_threads()`` per op unless someone chose; True if it did.

    Leaves things alone when ``TF_NUM_INTRAOP_THREADS`` is set, when
    ``tf.config.threading`` already has a value, or when TensorFlow has
    already started in this process (its pools are then fixed: logged).
    ``environ`` and ``modules`` are the process's, replaceable in tests.
    """
    if INTRA_OP_VARIABLE in environ:
        return False
    threads = default_intra_op_threads()
    tf = modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):  # imported before fedsim
        if tf.config.threading.get_intra_op_parallelism_threads():
            return False  # chosen through tf.config
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:
            logger.info("TensorFlow started before fedsim was imported, so it keeps one thread per core "
                        "per op; import fedsim first for fedsim's default of %d", threads)
            return False
    environ[INTRA_OP_VARIABLE] = str(threads)
    return True


def thread_settings() -> dict:
    """What decides TensorFlow's thread pools in this process, for a run's records.

    ``tf_config_*`` are ``tf.config.threading``'s values (0: not set there, so
    the environment variable, or else one thread per core, applies).
    """
    settings = {
        "cores": schedulable_cores(),
        INTRA_OP_VARIABLE: os.environ.get(INTRA_OP_VARIABLE),
        INTER_OP_VARIABLE: os.environ.get(INTER_OP_VARIABLE),
    }
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        settings["tf_config_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        settings["tf_config_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    return settings
