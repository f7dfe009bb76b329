"""Executors: where client work runs. All give the same outputs, in cohort order.

``make_executor(name, client_work)`` builds one by name (the config system and
``build_fedavg(executor_fn=...)`` use it):

- ``"sequential"``: clients one after another (the simple reference path).
- ``"vectorized"``: the whole cohort as one batched computation (Keras models;
  compiled with XLA for small dense models, else a graph loop; see ``xla_rules.xla_blocker``).
- ``"multi_device"``: the cohort split over every visible device, vectorized per device.
- ``"auto"`` (default): ``"multi_device"`` with several GPUs, ``"vectorized"`` otherwise,
  when the client work allows it (Keras models, see ``cohort_blocker``); else ``"sequential"``.
"""
from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf

from fedsim.execution.multi_device import MultiDeviceExecutor, visible_devices
from fedsim.execution.sequential import SequentialExecutor
from fedsim.execution.cohort_io import VectorizationError
from fedsim.execution.vectorized import VectorizedExecutor, cohort_blocker

logger = logging.getLogger(__name__)

EXECUTOR_NAMES = ("auto", "sequential", "vectorized", "multi_device")


def make_executor(name: str, client_work: Any) -> Any:
    """The executor called ``name`` (one of ``EXECUTOR_NAMES``) over ``client_work``.

    Raises:
      ValueError: for an unknown name.
      VectorizationError: for ``"vectorized"``/``"multi_device"`` with client work they cannot batch.
    """
    if name == "auto":
        reason = cohort_blocker(client_work)
        if reason is None:
            if len(tf.config.list_logical_devices("GPU")) > 1:
                return MultiDeviceExecutor(client_work, visible_devices())
            return VectorizedExecutor(client_work)
        logger.info("executor 'auto' uses 'sequential': %s", reason)
        return SequentialExecutor(client_work)
    if name == "sequential":
        return SequentialExecutor(client_work)
    if name == "vectorized":
        return VectorizedExecutor(client_work)
    if name == "multi_device":
        return MultiDeviceExecutor(client_work)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTOR_NAMES)}")


__all__ = [
    "EXECUTOR_NAMES",
    "MultiDeviceExecutor",
    "SequentialExecutor",
    "VectorizationError",
    "VectorizedExecutor",
    "make_executor",
]
