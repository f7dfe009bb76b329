"""Every algorithm lowers the training loss on Synthetic(1, 1): 20 rounds, logistic regression, cohort 10."""
import keras
import pytest
import tensorflow as tf

import fedsim
from fedsim import algorithms
from fedsim.datasets.synthetic import NUM_CLASSES, NUM_FEATURES, load_synthetic
from fedsim.optimizers import SGD
from fedsim.simulation.sampling import UniformSampler

TRAIN, _ = load_synthetic(1.0, 1.0, num_devices=30, seed=0)


def model_fn():
    model = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros")])
    spec = (tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec)


BUILDERS = {
    "fedavg": lambda: algorithms.build_fedavg(model_fn, SGD(0.01), batch_size=10),
    "fedsgd": lambda: algorithms.build_fedsgd(model_fn, SGD(0.1)),
    "fedprox": lambda: algorithms.build_fedprox(model_fn, 0.1, SGD(0.01), batch_size=10),
    "fedadam": lambda: algorithms.build_fedopt(
        model_fn, algorithms.fedadam_server_optimizer(0.03), client_optimizer=SGD(0.01), batch_size=10),
    "scaffold": lambda: algorithms.build_scaffold(model_fn, 30, client_learning_rate=0.01, batch_size=10),
    "fednova": lambda: algorithms.build_fednova(model_fn, 0.01, batch_size=10),
    "mime_lite": lambda: algorithms.build_mime_lite(model_fn, SGD(0.01, momentum=0.5), batch_size=10),
    "qffl": lambda: algorithms.build_qffl(model_fn, q=1.0, client_learning_rate=0.01, batch_size=10),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_training_loss_goes_down(name):
    process = BUILDERS[name]()
    ids = list(TRAIN.client_ids)
    everyone = [TRAIN.create_tf_dataset_for_client(c) for c in ids]
    state = process.initialize()
    before = float(process.evaluate(state.model_weights, everyone)["loss"])
    sampler = UniformSampler(10, seed=1)
    for round_num in range(1, 21):
        cohort = [ids[i] for i in sampler.sample(round_num, len(ids))]
        state = process.next(state, [TRAIN.create_tf_dataset_for_client(c) for c in cohort], cohort).state
    after = float(process.evaluate(state.model_weights, everyone)["loss"])
    assert after < 0.9 * before, f"{name}: training loss {before:.4f} -> {after:.4f}"
