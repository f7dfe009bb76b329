"""Test data is checked at the door like train data (issue 18, item 6).

A test split of another feature width, or with a label outside the classes,
is a named error when the population is built: exit code 2 before any round,
so no ``metrics.jsonl`` is written. A test split whose users hold no examples
is allowed and evaluates honestly to "no examples".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsim.cli import main
from fedsim.data import ClientData
from fedsim.experiment import config_from_dict, config_to_toml
from fedsim.experiment import data_blocks as blocks
from fedsim.experiment.build_data import (
    DataBuildError,
    LabelRangeError,
    Population,
    SplitMismatchError,
    build_population,
    check_test_split,
)


def write_split(folder: Path, users: dict[str, tuple[list, list]]) -> str:
    """One LEAF shard in ``folder``: ``{user: (x rows, labels)}``."""
    folder.mkdir(parents=True)
    user_data = {user: {"x": x, "y": y} for user, (x, y) in users.items()}
    shard = {"users": list(users), "num_samples": [len(y) for _, y in users.values()], "user_data": user_data}
    (folder / "shard.json").write_text(json.dumps(shard), encoding="utf-8")
    return str(folder)


def rows(width: int, count: int, value=0.5) -> list:
    return [[value] * width] * count


TRAIN = {f"w{i}": (rows(784, 2), [0, 1]) for i in range(3)}


def leaf_block(tmp_path: Path, test: dict, train: dict = TRAIN) -> blocks.LeafData:
    return blocks.LeafData(train_dir=write_split(tmp_path / "train", train),
                           test_dir=write_split(tmp_path / "test", test), num_classes=2)


def run(tmp_path: Path, block: blocks.LeafData, capsys) -> tuple[int, str, Path]:
    """``fedsim run`` of ``block``: exit code, stderr then stdout, run directory."""
    raw = {"rounds": 1, "model": {"name": "logreg"}, "sampler": {"cohort_size": 2},
           "logging": {"tensorboard": False},
           "data": {"name": "leaf", "train_dir": block.train_dir, "test_dir": block.test_dir, "num_classes": 2}}
    config = tmp_path / "run.toml"
    config.write_text(config_to_toml(config_from_dict(raw)), encoding="utf-8")
    capsys.readouterr()
    code = main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.err + captured.out, tmp_path / "run"


def test_a_test_split_of_another_feature_width_is_refused_before_any_round(tmp_path, capsys):
    block = leaf_block(tmp_path, {"t1": (rows(10, 2), [0, 1]), "t2": (rows(10, 1), [1])})
    with pytest.raises(SplitMismatchError) as error:
        build_population(block, seed=0)
    message = str(error.value)
    assert "test client 't1' has examples x float32 (10,)" in message
    assert "train client 'w0' has x float32 (784,)" in message
    code, output, run_dir = run(tmp_path, block, capsys)
    assert code == 2 and "Traceback" not in output
    assert "fedsim: error: test client 't1' has examples x float32 (10,)" in output
    assert not (run_dir / "metrics.jsonl").exists()
    assert "run failed: SplitMismatchError" in (run_dir / "run.log").read_text(encoding="utf-8")


def test_a_test_label_outside_the_classes_is_refused_before_any_round(tmp_path, capsys):
    block = leaf_block(tmp_path, {"t1": (rows(784, 2), [0, 1]), "t2": (rows(784, 2), [1, 4])})
    code, output, run_dir = run(tmp_path, block, capsys)
    assert code == 2 and "Traceback" not in output
    assert "test client 't2' has label 4, outside [0, 2)" in output
    assert not (run_dir / "metrics.jsonl").exists()


def test_test_labels_of_another_shape_are_refused(tmp_path):
    block = leaf_block(tmp_path, {"t1": (rows(784, 2), [[0], [1]])})
    with pytest.raises(SplitMismatchError, match=r"x float32 \(784,\), y int64 \(1,\), but train client"):
        build_population(block, seed=0)


def test_check_test_split_compares_dtypes():
    x = np.zeros((2, 3), np.float32)
    train = ClientData.from_tensor_slices({"a": (x, np.int32([0, 1]))})
    test = ClientData.from_tensor_slices({"b": (x.astype(np.float64), np.int32([0, 1]))})
    with pytest.raises(SplitMismatchError, match=r"test client 'b' has examples x float64 \(3,\).*'a' has x float32"):
        check_test_split(Population(train, test, 2))
    check_test_split(Population(train, train, 2))  # the same spec passes
    assert issubclass(SplitMismatchError, DataBuildError)  # the CLI's exit code 2


def test_a_test_split_whose_users_are_all_empty_evaluates_to_no_examples(tmp_path, capsys):
    block = leaf_block(tmp_path, {"t1": ([], []), "t2": ([], [])}, train={f"w{i}": (rows(4, 2), [0, 1]) for i in range(3)})
    population = build_population(block, seed=0)
    assert population.test.element_type_structure == population.train.element_type_structure
    assert [population.test.num_examples(c) for c in population.test.client_ids] == [0, 0]
    code, output, run_dir = run(tmp_path, block, capsys)
    assert code == 0, output
    record = json.loads((run_dir / "metrics.jsonl").read_text(encoding="utf-8"))
    assert record["eval"]["num_examples"] == 0 and "accuracy" not in record["eval"]
    assert record["train"]["num_examples"] == 4  # the cohort's 2 users of 2 examples trained
    assert "test accuracy: no examples" in output  # the summary, on stdout


def test_empty_and_integer_test_users_take_the_train_spec(tmp_path):
    # JSON gives [] no shape and [1, 0] integers: both follow the float32 train features.
    block = leaf_block(tmp_path, {"t1": ([], []), "t2": ([[1] * 784, [0] * 784], [1, 0])})
    population = build_population(block, seed=0)
    element = next(population.test.create_tf_dataset_for_client("t2").as_numpy_iterator())
    assert element[0].dtype == np.float32 and element[0].shape == (784,) and element[1] == 1
    assert population.test.num_examples("t1") == 0


def write_arrays(tmp_path: Path, y: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((len(y), 3), np.float32), y=y)
    return str(path)


def test_arrays_declared_num_classes_sizes_the_population(tmp_path):
    path = write_arrays(tmp_path, np.arange(12) % 3)
    assert build_population(blocks.ArraysData(path=path, num_clients=3), seed=0).num_classes == 3
    assert build_population(blocks.ArraysData(path=path, num_clients=3, num_classes=10), seed=0).num_classes == 10
    with pytest.raises(LabelRangeError, match=r"label 2 at row 2 is outside \[0, 2\) of data.num_classes = 2"):
        build_population(blocks.ArraysData(path=path, num_clients=3, num_classes=2), seed=0)


def test_arrays_infer_classes_only_within_the_bound(tmp_path):
    y = np.arange(12) % 3
    y[5] = 12  # 13 classes for 12 examples: more classes than examples
    block = blocks.ArraysData(path=write_arrays(tmp_path, y), num_clients=3)
    with pytest.raises(LabelRangeError, match=r"largest label is 12 \(row 5\).*more than the 12 .*set data.num_classes"):
        build_population(block, seed=0)
    assert build_population(blocks.ArraysData(path=block.path, num_clients=3, num_classes=13), seed=0).num_classes == 13


def test_arrays_whole_float_labels_become_classes(tmp_path):
    path = write_arrays(tmp_path, (np.arange(12) % 3).astype(np.float64))
    population = build_population(blocks.ArraysData(path=path, num_clients=3, test_fraction=0.0), seed=0)
    labels = np.concatenate([[y for _, y in population.train.create_tf_dataset_for_client(c).as_numpy_iterator()]
                             for c in population.train.client_ids])
    assert labels.dtype == np.int32 and sorted(labels) == sorted(np.arange(12) % 3)


def test_a_built_in_model_on_text_examples_is_refused_by_name():
    import tensorflow as tf

    from fedsim.experiment import blocks
    from fedsim.experiment.build_model import InputShapeError, model_fn_for

    spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64))
    with pytest.raises(InputShapeError, match=r"model.name='mlp' takes numbers, but the data's examples are text"):
        model_fn_for(blocks.MultiLayerPerceptron(), spec, num_classes=2)
