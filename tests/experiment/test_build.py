"""Building runs from blocks: partitioned arrays, the CNN, the character LSTM, a custom model function."""
from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

from fedsim.experiment import config_from_dict
from fedsim.experiment.build import build_experiment
from fedsim.experiment.build_model import ModelBuildError


def arrays_file(tmp_path, x: np.ndarray, y: np.ndarray):
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return str(path)


def base(data: dict, model: dict, **extra) -> dict:
    return {"rounds": 1, "data": data, "model": model, "sampler": {"cohort_size": 2}, **extra}


def test_partitioned_arrays_hold_every_example_once(tmp_path):
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.repeat(np.arange(4, dtype=np.int32), 25)
    data = {"name": "arrays", "path": arrays_file(tmp_path, x, y), "num_clients": 5, "test_fraction": 0.2,
            "partitioner": {"name": "shards", "shards_per_client": 2}}
    experiment = build_experiment(config_from_dict(base(data, {"name": "logreg"})))
    seen = []
    for population in (experiment.train_data, experiment.test_data):
        for client in population.client_ids:
            seen += [int(a[0]) // 2 for a, _ in population.create_tf_dataset_for_client(client).as_numpy_iterator()]
    assert sorted(seen) == list(range(100))


def test_cnn_gets_the_image_shape_and_class_count(tmp_path):
    x = np.zeros((40, 28, 28, 1), np.float32)
    y = np.arange(40, dtype=np.int32) % 7
    data = {"name": "arrays", "path": arrays_file(tmp_path, x, y), "num_clients": 4}
    experiment = build_experiment(config_from_dict(base(data, {"name": "cnn"})))
    shapes = [w.shape for w in experiment.process.initialize().model_weights.trainable]
    assert shapes[0] == (5, 5, 1, 32) and shapes[-1] == (7,)


def test_char_lstm_predicts_every_step(tmp_path):
    x = np.ones((12, 10), np.int32)
    y = np.full(12, 5, np.int32)  # num_classes = vocabulary size = 6
    data = {"name": "arrays", "path": arrays_file(tmp_path, x, y), "num_clients": 3}
    model = {"name": "char_lstm", "embedding_dim": 3, "units": 4}
    experiment = build_experiment(config_from_dict(base(data, model)))
    shapes = [w.shape for w in experiment.process.initialize().model_weights.trainable]
    assert shapes[0] == (6, 3) and shapes[-1] == (6,)


def small_classifier(hidden: int):
    """A custom model function, imported by the test below as 'tests.experiment.test_build:small_classifier'."""
    model = keras.Sequential([keras.Input((60,)), keras.layers.Dense(hidden), keras.layers.Dense(10)])
    return model, keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_custom_model_function_with_params():
    model = {"name": "custom", "function": f"{__name__}:small_classifier", "params": {"hidden": 3}}
    config = config_from_dict(base({"name": "synthetic", "num_devices": 4}, model))
    shapes = [w.shape for w in build_experiment(config).process.initialize().model_weights.trainable]
    assert shapes == [(60, 3), (3,), (3, 10), (10,)]


def test_custom_model_that_cannot_be_imported():
    model = {"name": "custom", "function": "no_such_module_xyz:make"}
    config = config_from_dict(base({"name": "synthetic", "num_devices": 4}, model))
    with pytest.raises(ModelBuildError, match="cannot import 'no_such_module_xyz'"):
        build_experiment(config)
    assert "no_such_module_xyz" not in sys.modules
