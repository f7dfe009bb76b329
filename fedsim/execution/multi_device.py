"""The multi-device executor: a cohort split over every visible device, one shard per device.

Each device trains its shard of the cohort with the vectorized computation.
That computation holds no variables, so one compiled trainer serves every
device at once; threads only launch the shards (TensorFlow releases the GIL
while a graph runs). On one CPU, the vectorized executor already uses every
core; this pays off with several accelerators.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from fedsim.execution.failures import isolate_failures, with_defaults
from fedsim.execution.sequential import SequentialExecutor
from fedsim.execution.cohort_io import (
    client_outputs, cohort_inputs_as_arrays, cohort_non_trainable, cohort_rng_states)
from fedsim.execution.vectorized import CohortTrainer


def visible_devices() -> list[str]:
    """The devices to spread clients over: every GPU when there is one, else every CPU device."""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return gpus or [d.name for d in tf.config.list_logical_devices("CPU")]


class MultiDeviceExecutor:
    """Splits the cohort into contiguous shards, one per device, and trains them concurrently.

    Args:
      client_work: a client work the vectorized executor accepts.
      devices: device names (e.g. ``["/device:CPU:0", "/device:CPU:1"]``); default
        ``visible_devices()``.

    Outputs are in cohort order and equal the sequential executor's (to float rounding).
    """

    name = "multi_device"

    def __init__(self, client_work: Any, devices: Optional[Sequence[str]] = None):
        self.devices = list(devices) if devices is not None else visible_devices()
        if not self.devices:
            raise ValueError("devices is empty; pass device names or leave it None for every visible device")
        self.client_work = client_work
        self.trainer = CohortTrainer(client_work)
        self._threads = ThreadPoolExecutor(len(self.devices), thread_name_prefix="fedsim-device")
        self._sequential = SequentialExecutor(client_work)

    def train(
        self,
        model_weights: Any,
        datasets: Sequence[tf.data.Dataset],
        inputs: Optional[Sequence[Any]] = None,
        client_ids: Optional[Sequence[Any]] = None,
    ) -> list:
        """Per client, in cohort order, its ``ClientOutput`` or a ``ClientFailure``."""
        inputs, client_ids = with_defaults(datasets, inputs, client_ids)
        return isolate_failures(partial(self._train, model_weights), datasets, inputs, client_ids)

    def _train(self, model_weights: Any, datasets: Sequence[tf.data.Dataset], inputs: Sequence[Any]) -> list:
        shards = [s for s in np.array_split(np.arange(len(datasets)), len(self.devices)) if len(s)]
        offsets, optimizer_state = cohort_inputs_as_arrays(self.client_work.task, inputs)
        rng = cohort_rng_states(self.client_work, inputs)
        non_trainable = cohort_non_trainable(model_weights, inputs)

        def run(device: str, shard: np.ndarray):
            with tf.device(device):
                trainable = [tf.convert_to_tensor(a) for a in model_weights.trainable]
                shard_offsets = None if offsets is None else [o[shard] for o in offsets]
                results = self.trainer(trainable, [n[shard] for n in non_trainable], [datasets[i] for i in shard],
                                       shard_offsets, optimizer_state, [r[shard] for r in rng])
            return client_outputs(self.client_work, results)

        futures = [self._threads.submit(run, d, s) for d, s in zip(self.devices, shards)]
        return [output for future in futures for output in future.result()]

    def evaluate(self, model_weights: Any, datasets: Sequence[tf.data.Dataset]) -> list:
        return self._sequential.evaluate(model_weights, datasets)
