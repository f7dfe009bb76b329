"""The conformance matrix's axes: every algorithm, built the same way, and the populations.

Each algorithm is built by one function ``(model_fn, **blocks) -> process``,
where ``blocks`` are the keyword arguments every builder takes
(``aggregator``, ``executor_fn``, ``faults``), so a test crosses algorithms
with executors and aggregator chains without code per algorithm.
"""
import numpy as np
import tensorflow as tf

from fedsim import algorithms
from fedsim.optimizers import SGD

POPULATION_SIZE = 8  # more than any cohort: SCAFFOLD's and FedDyn's |S|/N < 1

ALGORITHMS = {
    "fedavg": lambda m, **kw: algorithms.build_fedavg(m, SGD(0.1), batch_size=4, **kw),
    "fedavg_unweighted": lambda m, **kw: algorithms.build_fedavg(m, SGD(0.1), weighted=False, batch_size=4, **kw),
    "fedsgd": lambda m, **kw: algorithms.build_fedsgd(m, SGD(0.5), **kw),
    "fedprox": lambda m, **kw: algorithms.build_fedprox(m, 0.3, SGD(0.1), batch_size=4, **kw),
    "fedavgm": lambda m, **kw: algorithms.build_fedopt(
        m, algorithms.fedavgm_server_optimizer(1.0, 0.9), client_optimizer=SGD(0.1), batch_size=4, **kw),
    "fedadam": lambda m, **kw: algorithms.build_fedopt(
        m, algorithms.fedadam_server_optimizer(0.05), client_optimizer=SGD(0.1), batch_size=4, **kw),
    "scaffold": lambda m, **kw: algorithms.build_scaffold(m, POPULATION_SIZE, 0.1, batch_size=4, **kw),
    "scaffold_option_i": lambda m, **kw: algorithms.build_scaffold_option_i(
        m, POPULATION_SIZE, 0.1, batch_size=4, **kw),
    "fednova": lambda m, **kw: algorithms.build_fednova(m, 0.1, batch_size=4, local_epochs=2, **kw),
    "mime_lite": lambda m, **kw: algorithms.build_mime_lite(m, SGD(0.1, momentum=0.9), batch_size=4, **kw),
    "qffl": lambda m, **kw: algorithms.build_qffl(m, 1.0, 0.1, batch_size=4, **kw),
    "q_fedsgd": lambda m, **kw: algorithms.build_q_fedsgd(m, 1.0, 10.0, **kw),
    "feddyn": lambda m, **kw: algorithms.build_feddyn(m, POPULATION_SIZE, 0.1, 0.1, batch_size=4, **kw),
}

EQUAL_SIZES = (8, 8, 8, 8)
RAGGED_SIZES = (7, 13, 5, 10)  # short last batches at batch size 4


def population(sizes, num_features, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(n, num_features)).astype(np.float32), rng.integers(0, num_classes, n).astype(np.int32))
        for n in sizes
    ]


def datasets(clients):
    return [tf.data.Dataset.from_tensor_slices(c) for c in clients]


def run(process, clients, rounds, ids=None):
    """``rounds`` rounds over the whole population; returns the final state and every round's result."""
    ids = ids or [f"client-{i}" for i in range(len(clients))]
    state, results = process.initialize(), []
    for _ in range(rounds):
        result = process.next(state, datasets(clients), ids)
        state = result.state
        results.append(result)
    return state, results


def flat_state(process, state, ids):
    """Every number the server and the clients keep, as a flat list of float64 arrays."""
    leaves = [np.asarray(a, np.float64) for a in state.model_weights.trainable]
    leaves += [np.asarray(a, np.float64) for a in state.model_weights.non_trainable]
    for nest in (state.optimizer_state, state.algorithm_state):
        leaves += [np.asarray(a, np.float64) for a in tf.nest.flatten(nest) if a is not None]
    for store in process.client_stores:  # algorithm state, FedBN's non-trainable weights
        for client_id in ids:
            stored = store.get(client_id)
            leaves += [np.asarray(a, np.float64) for a in stored or []]
    return leaves


def _keras_model_fn(layers, num_features, num_classes=3, seed=5):
    """A fedsim Keras model builder with initial weights fixed by ``seed``."""
    import keras

    import fedsim

    def build():
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((num_features,))] + layers())
        spec = (tf.TensorSpec([None, num_features], tf.float32), tf.TensorSpec([None], tf.int32))
        return fedsim.from_keras_model(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec,
            metrics=[keras.metrics.SparseCategoricalAccuracy()])

    return build


def _logreg():
    import keras

    return [keras.layers.Dense(3)]


def _mlp_bn_dropout():
    import keras

    return [keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.ReLU(),
            keras.layers.Dropout(0.3, seed=11), keras.layers.Dense(3)]


def _cnn():
    import keras

    return [keras.layers.Reshape((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(3)]


# name -> (model_fn, number of features); the CNN reads its 36 features as a 6x6 image.
MODELS = {
    "logreg": (_keras_model_fn(_logreg, 6), 6),
    "mlp_bn_dropout": (_keras_model_fn(_mlp_bn_dropout, 6), 6),
    "cnn": (_keras_model_fn(_cnn, 36), 36),
}
# After 3 rounds, the most an executor may differ from the sequential one. The client loop
# (mlp with BatchNormalization, CNN) runs the sequential kernels on the same batches: 0.
# XLA (logreg) fuses differently: float rounding.
TOLERANCE = {"logreg": 1e-5, "mlp_bn_dropout": 1e-5, "cnn": 1e-5}
