"""Building runs from blocks: partitioned arrays, the CNN (flat or shaped images), the character LSTM,
custom model functions and where their modules are found, initial weights from a file, data.shuffle."""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from fedsim.experiment import ConfigError, config_from_dict, load_config
from fedsim.experiment.build import build_experiment
from fedsim.experiment.build_model import (
    InitialWeightsError, InputShapeError, ModelBuildError, image_input_shape, module_search_path,
    resolve_custom_function,
)


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


# Image models take flat or shaped inputs -------------------------------------------
@pytest.mark.parametrize("input_shape, data_shape, expected", [
    (None, [784], (28, 28, 1)),  # LEAF's FEMNIST: a flat square image, one channel
    (None, [28, 28], (28, 28, 1)),
    (None, [32, 32, 3], (32, 32, 3)),  # shaped data as is
    ([32, 32, 3], [3072], (32, 32, 3)),
    ([4, 4, 3], [4, 12], (4, 4, 3)),
])
def test_image_input_shape(input_shape, data_shape, expected):
    assert image_input_shape(input_shape, data_shape) == expected


@pytest.mark.parametrize("input_shape, data_shape, expected", [
    (None, [60], r"60 values: not a square image with one channel\); set model.input_shape"),
    (None, [2, 2, 2, 2], "set model.input_shape"),
    ([28, 28, 1], [100], r"model.input_shape=\[28, 28, 1\] holds 784 values, but each example .* has shape \[100\]"),
    ([28, 28], [784], r"must be \[height, width, channels\]"),
    (None, [None, 28], "unknown size"),
])
def test_image_input_shape_errors(input_shape, data_shape, expected):
    with pytest.raises(InputShapeError, match=expected):
        image_input_shape(input_shape, data_shape)


def test_cnn_trains_on_flat_images_through_a_reshape_layer(tmp_path):
    x = np.random.default_rng(0).random((12, 784), dtype=np.float32)  # LEAF FEMNIST's flat 784 floats
    y = np.arange(12, dtype=np.int32) % 3
    data = {"name": "arrays", "path": arrays_file(tmp_path, x, y), "num_clients": 2, "test_fraction": 0.25}
    experiment = build_experiment(config_from_dict(base(data, {"name": "cnn"}, executor="sequential")))
    assert experiment.train_data.element_type_structure[0].shape == (784,)  # the data stays flat
    assert any(isinstance(layer, keras.layers.Reshape) for layer in experiment.process.model.keras_model.layers)
    state = experiment.process.initialize()
    assert state.model_weights.trainable[0].shape == (5, 5, 1, 32)
    datasets = [experiment.client_dataset(c, 1) for c in experiment.train_data.client_ids]
    result = experiment.process.next(state, datasets)
    assert np.isfinite(result.metrics["loss"])
    assert not np.array_equal(result.state.model_weights.trainable[0], state.model_weights.trainable[0])


def test_cnn_input_shape_from_the_config(tmp_path):
    x = np.zeros((8, 48), np.float32)  # 4x4 RGB images, flattened
    y = np.arange(8, dtype=np.int32) % 2
    data = {"name": "arrays", "path": arrays_file(tmp_path, x, y), "num_clients": 2}
    experiment = build_experiment(config_from_dict(base(data, {"name": "cnn", "input_shape": [4, 4, 3]})))
    assert experiment.process.initialize().model_weights.trainable[0].shape == (5, 5, 3, 32)


def test_cnn_on_flat_data_of_no_square_size_asks_for_input_shape(tmp_path):
    with pytest.raises(InputShapeError, match="set model.input_shape"):
        build_experiment(config_from_dict(base({"name": "synthetic", "num_devices": 4}, {"name": "cnn"})))


# Custom model modules: the config's folder, then the working directory -------------
CUSTOM_MODULE = '''
import keras
import {helper}


def build(hidden):
    model = keras.Sequential([keras.Input((60,)), keras.layers.Dense(hidden), keras.layers.Dense(10)])
    return model, keras.losses.SparseCategoricalCrossentropy(from_logits={helper}.FROM_LOGITS)
'''


def write_custom_module(folder, name):
    """A module ``name`` that imports a sibling module, as a researcher's models file may."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(CUSTOM_MODULE.format(helper=f"{name}_helper"), encoding="utf-8")
    (folder / f"{name}_helper.py").write_text("FROM_LOGITS = True\n", encoding="utf-8")


CUSTOM_CONFIG = """\
rounds = 1
[data]
name = "synthetic"
num_devices = 4
[model]
name = "custom"
function = "{module}:build"
params = {{ hidden = 3 }}
[sampler]
cohort_size = 2
"""


def test_custom_module_next_to_the_config_is_found_from_any_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    write_custom_module(folder, "study_models_a1")
    (folder / "run.toml").write_text(CUSTOM_CONFIG.format(module="study_models_a1"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    path_before = list(sys.path)
    config = load_config(folder / "run.toml")
    assert config.model.module_dir == str(folder.resolve())  # written in: the run directory's copy finds it too
    shapes = [w.shape for w in build_experiment(config).process.initialize().model_weights.trainable]
    assert shapes == [(60, 3), (3,), (3, 10), (10,)]
    assert sys.path == path_before  # searched while importing and building, not left behind


def test_custom_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    write_custom_module(tmp_path, "cwd_models_b2")
    monkeypatch.chdir(tmp_path)
    model = {"name": "custom", "function": "cwd_models_b2:build", "params": {"hidden": 2}}
    config = config_from_dict(base({"name": "synthetic", "num_devices": 4}, model))
    assert config.model.module_dir is None  # no config file: the working directory, then sys.path
    shapes = [w.shape for w in build_experiment(config).process.initialize().model_weights.trainable]
    assert shapes == [(60, 2), (2,), (2, 10), (10,)]


def test_a_resolved_custom_function_pickles_by_name_for_other_processes(tmp_path, monkeypatch):
    # A Ray actor unpickles the model function in its own working directory, with its own sys.path.
    folder = tmp_path / "study"
    write_custom_module(folder, "pickled_models_c3")
    function = resolve_custom_function("pickled_models_c3:build", folder)
    restored = pickle.loads(pickle.dumps(function))
    for name in ("pickled_models_c3", "pickled_models_c3_helper"):
        monkeypatch.delitem(sys.modules, name)  # as in a fresh process
    monkeypatch.chdir(tmp_path)
    keras_model, _ = restored(hidden=4)
    assert [tuple(w.shape) for w in keras_model.weights] == [(60, 4), (4,), (4, 10), (10,)]


def test_custom_module_search_path():
    assert module_search_path() == [Path.cwd().resolve()]
    assert module_search_path("/some/configs") == [Path("/some/configs").resolve(), Path.cwd().resolve()]
    assert module_search_path(Path.cwd()) == [Path.cwd().resolve()]


def test_the_example_custom_model_config_runs_from_another_directory(tmp_path, monkeypatch):
    from fedsim import cli

    example = Path(__file__).resolve().parents[2] / "configs" / "custom_model_fedsgd.toml"
    monkeypatch.delitem(sys.modules, "my_models", raising=False)  # found afresh, from the config's folder
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    overrides = ["--set", "rounds=2", "--set", "logging.tensorboard=false"]
    assert cli.main(["run", str(example), "--out", str(run_dir), "--quiet", *overrides]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2] and np.isfinite(records[-1]["train"]["loss"])
    assert sys.modules["my_models"].__file__ == str(example.parent / "my_models.py")


# Initial weights from a file ----------------------------------------------------------
SYNTHETIC = {"name": "synthetic", "num_devices": 4}


def start_from(path, model=None, **extra):
    """The first state of a run whose model starts from ``path``."""
    model = {"name": "logreg", "initial_weights": str(path), **(model or {})}
    return build_experiment(config_from_dict(base(SYNTHETIC, model, **extra))).process.initialize()


def test_initial_weights_named_by_variable_are_cast_to_the_model_dtypes(tmp_path):
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(60, 10)), rng.normal(size=10)  # float64 in the file
    np.savez(tmp_path / "init.npz", **{"sequential/dense/kernel": kernel, "dense/bias": bias})
    state = start_from(tmp_path / "init.npz")
    assert [w.dtype for w in state.model_weights.trainable] == [np.float32, np.float32]
    np.testing.assert_array_equal(state.model_weights.trainable[0], kernel.astype(np.float32))
    np.testing.assert_array_equal(state.model_weights.trainable[1], bias.astype(np.float32))


def test_positional_initial_weights_keep_their_numeric_order(tmp_path):
    # mlp with 5 hidden layers: 12 arrays, so arr_10 and arr_11 would sort before arr_2 as text.
    hidden = [2, 3, 4, 5, 6]
    sizes = [60, *hidden, 10]
    arrays = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        arrays += [np.full((fan_in, fan_out), len(arrays), np.float32), np.full(fan_out, len(arrays) + 1, np.float32)]
    np.savez(tmp_path / "init.npz", *arrays)
    state = start_from(tmp_path / "init.npz", {"name": "mlp", "hidden": hidden})
    assert [float(w.flat[0]) for w in state.model_weights.trainable] == list(range(12))


def test_initial_weights_path_is_read_from_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    np.savez(folder / "init.npz", np.ones((60, 10)), np.zeros(10))
    (folder / "run.toml").write_text(
        'rounds = 1\n[data]\nname = "synthetic"\nnum_devices = 4\n[model]\nname = "logreg"\n'
        'initial_weights = "init.npz"\n[sampler]\ncohort_size = 2\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    config = load_config(folder / "run.toml")
    assert config.model.initial_weights == str(folder / "init.npz")
    assert np.all(build_experiment(config).process.initialize().model_weights.trainable[0] == 1)


@pytest.mark.parametrize("arrays, expected", [
    ({"kernel": np.zeros((60, 10))}, r"holds 1 arrays, but the model has 2 variables \(2 trainable, then 0 "
                                     r"non-trainable: kernel \(60, 10\), bias \(10,\)\)"),
    ({"dense/bias": np.zeros(10), "dense/kernel": np.zeros((60, 10))},
     r"array 0 \('dense/bias'\) is for variable 0 of the model, .*, named 'kernel'; the arrays are out of order"),
    ({"kernel": np.zeros((10, 60)), "bias": np.zeros(10)}, r"of shape \(60, 10\), but the array has shape \(10, 60\)"),
    ({"kernel": np.zeros((60, 10), np.complex64), "bias": np.zeros(10)}, "a complex64 array does not cast"),
    ({"kernel": np.full((60, 10), np.nan), "bias": np.zeros(10)}, "holds NaN or Inf"),
    ({"arr_0": np.zeros((60, 10)), "bias": np.zeros(10)}, r"mixes positional keys \(arr_N\) with named ones"),
])
def test_initial_weights_that_do_not_fit_are_named_before_round_one(tmp_path, arrays, expected):
    np.savez(tmp_path / "init.npz", **arrays)
    with pytest.raises(InitialWeightsError, match=expected):
        start_from(tmp_path / "init.npz")


def test_unreadable_initial_weights_are_named(tmp_path):
    with pytest.raises(InitialWeightsError, match="no such file"):
        start_from(tmp_path / "missing.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(InitialWeightsError, match="single array"):
        start_from(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("not a zip", encoding="utf-8")
    with pytest.raises(InitialWeightsError, match="cannot read"):
        start_from(tmp_path / "text.npz")


# data.shuffle = false ---------------------------------------------------------------
def test_no_shuffle_deals_the_file_rows_in_order(tmp_path):
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    y = np.zeros(10, np.int32)
    data = {"name": "arrays", "path": arrays_file(tmp_path, x, y), "num_clients": 3, "test_fraction": 0.0,
            "shuffle": False}
    experiment = build_experiment(config_from_dict(base(data, {"name": "logreg"})))
    rows = {c: [float(a[0]) for a, _ in experiment.client_dataset(c, round_num=2).as_numpy_iterator()]
            for c in experiment.train_data.client_ids}
    assert rows == {"0": [0, 1, 2, 3], "1": [4, 5, 6], "2": [7, 8, 9]}


def test_no_shuffle_refuses_a_shuffle_buffer():
    config = config_from_dict(base({**SYNTHETIC, "shuffle": False}, {"name": "logreg"}, client={"shuffle_buffer": 8}))
    with pytest.raises(ConfigError, match="data.shuffle = false, but client.shuffle_buffer = 8"):
        build_experiment(config)
