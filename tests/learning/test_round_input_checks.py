"""The round checks each client's dataset against the model, and leaves the garbage collector as it found it."""
import gc

import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.learning.validation import ClientDatasetError
from tests import logreg_reference as ref
from tests.learning.test_fedavg_reference import BATCH, LR, NUM_CLASSES, NUM_FEATURES, logreg_model_fn

KERNEL = np.random.default_rng(3).normal(size=(NUM_FEATURES, NUM_CLASSES))
CLIENTS = ref.make_clients([6, 9, 4], NUM_FEATURES, NUM_CLASSES, seed=4)


def _process():
    return fedsim.build_fedavg(logreg_model_fn(KERNEL, np.zeros(NUM_CLASSES)), fedsim.SGD(LR), batch_size=BATCH)


def test_a_misfit_client_after_fitting_ones_is_named():
    fitting = [tf.data.Dataset.from_tensor_slices(xy) for xy in CLIENTS]
    x, y = CLIENTS[0]
    narrow = tf.data.Dataset.from_tensor_slices((x[:, :4], y))
    process = _process()
    with pytest.raises(ClientDatasetError, match=r"client 'c3': batch field '0' is float32 \[None, 4\]"):
        process.next(process.initialize(), fitting + [narrow] + fitting[:1], ["c0", "c1", "c2", "c3", "c4"])
    wide_first = [tf.data.Dataset.from_tensor_slices((np.pad(x, ((0, 0), (0, 1))), y))] + fitting
    with pytest.raises(ClientDatasetError, match=r"client 'w': batch field '0' is float32 \[None, 7\]"):
        process.next(process.initialize(), wide_first, ["w", "c0", "c1", "c2"])


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_as_before_after_a_round_or_a_failed_one(enabled):
    process = _process()
    datasets = [tf.data.Dataset.from_tensor_slices(xy) for xy in CLIENTS]
    was_enabled = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        process.next(process.initialize(), datasets)
        assert gc.isenabled() == enabled
        with pytest.raises(ClientDatasetError):
            process.next(process.initialize(), [tf.data.Dataset.from_tensor_slices(CLIENTS[0][0])])
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was_enabled else gc.disable()
