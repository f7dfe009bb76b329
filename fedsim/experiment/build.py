"""From a validated ``RunConfig`` to the blocks of a run: data, model, process, sampler."""
from __future__ import annotations

from typing import Any, Callable

import attrs
import keras
import tensorflow as tf

from fedsim.data import ClientData
from fedsim.datasets import load_synthetic
from fedsim.experiment import blocks
from fedsim.learning import FederatedProcess, build_fedavg
from fedsim.models import from_keras_model, zoo
from fedsim.optimizers import SGD
from fedsim.simulation import UniformSampler


@attrs.frozen
class Experiment:
    """Everything a run needs, built from its config."""

    config: blocks.RunConfig
    process: FederatedProcess
    train_data: ClientData
    test_data: ClientData
    sampler: Any


def build_data(config: blocks.RunConfig) -> tuple[ClientData, ClientData]:
    data = config.data
    if isinstance(data, blocks.SyntheticData):
        seed = config.seed if data.seed is None else data.seed
        return load_synthetic(data.alpha, data.beta, data.iid, data.num_devices, data.test_fraction, seed)
    raise TypeError(f"no builder for data block {data!r}")


def build_keras_model(model: blocks.ModelBlock, num_features: int, num_classes: int) -> keras.Model:
    if isinstance(model, blocks.LogisticRegression):
        return zoo.logistic_regression(num_features, num_classes)
    if isinstance(model, blocks.MultiLayerPerceptron):
        return zoo.mlp(num_features, num_classes, model.hidden)
    raise TypeError(f"no builder for model block {model!r}")


def build_optimizer(optimizer: blocks.OptimizerBlock) -> Any:
    if isinstance(optimizer, blocks.SgdConfig):
        return SGD(optimizer.learning_rate, optimizer.momentum, optimizer.nesterov)
    raise TypeError(f"no builder for optimizer block {optimizer!r}")


def _classification_model_fn(config: blocks.RunConfig, element_spec: Any) -> Callable[[], Any]:
    x_spec, y_spec = element_spec
    num_features = int(x_spec.shape[-1])
    num_classes = 10  # Synthetic(alpha, beta) has 10 classes
    input_spec = (
        tf.TensorSpec([None] + list(x_spec.shape), x_spec.dtype),
        tf.TensorSpec([None] + list(y_spec.shape), y_spec.dtype),
    )

    def model_fn():
        return from_keras_model(
            build_keras_model(config.model, num_features, num_classes),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=input_spec,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    return model_fn


def build_experiment(config: blocks.RunConfig) -> Experiment:
    """Builds data, model and process; seeds Keras so initial model weights follow ``config.seed``."""
    keras.utils.set_random_seed(config.seed)
    train, test = build_data(config)
    algorithm = config.algorithm
    if not isinstance(algorithm, blocks.FedAvgConfig):
        raise TypeError(f"no builder for algorithm block {algorithm!r}")
    process = build_fedavg(
        _classification_model_fn(config, train.element_type_structure),
        client_optimizer=build_optimizer(config.client_optimizer),
        server_optimizer=build_optimizer(config.server_optimizer),
        weighted=algorithm.weighted,
        batch_size=algorithm.batch_size,
        local_epochs=algorithm.local_epochs,
    )
    sampler = UniformSampler(config.sampler.cohort_size, seed=config.seed)
    return Experiment(config, process, train, test, sampler)
