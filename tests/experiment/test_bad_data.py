"""Bad data is refused when the population is built, naming the client or row and the fix."""
import json

import numpy as np
import pytest

import fedsim
from fedsim.data import ClientDataError
from fedsim.experiment import data_blocks as blocks
from fedsim.experiment.build_data import DataBuildError, build_population


def _leaf_dir(path, labels):
    path.mkdir()
    users = {f"u{i}": {"x": [[0.5, 0.25]] * len(y), "y": y} for i, y in enumerate(labels)}
    document = {"users": list(users), "num_samples": [len(u["y"]) for u in users.values()], "user_data": users}
    (path / "shard.json").write_text(json.dumps(document))
    return str(path)


def test_leaf_label_outside_num_classes_names_the_client(tmp_path):
    block = blocks.LeafData(train_dir=_leaf_dir(tmp_path / "train", [[0, 1], [2, 7]]),
                            test_dir=_leaf_dir(tmp_path / "test", [[1], [0]]), num_classes=3)
    with pytest.raises(DataBuildError, match=r"train client 'u1' has label 7, outside \[0, 3\); set data.num_classes"):
        build_population(block, seed=0)
    ok = blocks.LeafData(train_dir=block.train_dir, test_dir=block.test_dir, num_classes=8)
    assert build_population(ok, seed=0).num_classes == 8


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((4, 2), np.float32), np.array([0, 1, -1, 0]), r"label -1 at row 2 is negative"),
    (np.array([[0, 1], [np.nan, 0], [1, 1], [0, 0]], np.float32), np.array([0, 1, 1, 0]),
     r"'x' holds NaN or Inf \(first in row 1\)"),
])
def test_arrays_with_bad_labels_or_values(tmp_path, x, y, message):
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataBuildError, match=message):
        build_population(blocks.ArraysData(path=str(path), num_clients=2), seed=0)


def test_client_arrays_holding_nan_are_refused():
    x = np.ones((5, 3), np.float32)
    x[3, 2] = np.inf
    with pytest.raises(ClientDataError, match=r"client 'b': array 0 holds NaN or Inf \(first in example 3\)"):
        fedsim.ClientData.from_tensor_slices({"a": (np.ones((2, 3), np.float32), np.zeros(2)), "b": (x, np.zeros(5))})
