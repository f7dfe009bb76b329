import json

import numpy as np
import pytest

from fedsim.data import ClientDataError
from fedsim.data.leaf import load_leaf


def _write_shard(path, user_data):
    users = list(user_data)
    content = {
        "users": users,
        "num_samples": [len(user_data[u]["y"]) for u in users],
        "user_data": user_data,
    }
    path.write_text(json.dumps(content))


@pytest.fixture
def leaf_dirs(tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir()
    test.mkdir()
    # Three users over two shards, as LEAF's split scripts write them.
    _write_shard(
        train / "all_data_0_niid_train.json",
        {
            "f0001": {"x": [[0.0, 0.5], [1.0, 1.5]], "y": [3, 4]},
            "f0002": {"x": [[2.0, 2.5]], "y": [5]},
        },
    )
    _write_shard(
        train / "all_data_1_niid_train.json", {"f0003": {"x": [[3.0, 3.5]] * 3, "y": [6, 7, 8]}}
    )
    _write_shard(
        test / "all_data_0_niid_test.json",
        {
            "f0001": {"x": [[9.0, 9.5]], "y": [1]},
            "f0002": {"x": [[8.0, 8.5]], "y": [2]},
            "f0003": {"x": [[7.0, 7.5]], "y": [0]},
        },
    )
    return train, test


def test_three_users_read_back_with_counts_and_values(leaf_dirs):
    train, test = load_leaf(*leaf_dirs)
    assert sorted(train.client_ids) == ["f0001", "f0002", "f0003"]
    assert [train.num_examples(u) for u in ["f0001", "f0002", "f0003"]] == [2, 1, 3]
    assert [test.num_examples(u) for u in ["f0001", "f0002", "f0003"]] == [1, 1, 1]
    elements = list(train.create_tf_dataset_for_client("f0001").as_numpy_iterator())
    np.testing.assert_array_equal(elements[1]["x"], np.array([1.0, 1.5], np.float32))
    assert elements[1]["x"].dtype == np.float32
    assert [e["y"] for e in elements] == [3, 4]
    assert next(test.create_tf_dataset_for_client("f0003").as_numpy_iterator())["y"] == 0


def test_users_in_only_one_split_are_named(leaf_dirs):
    train, test = leaf_dirs
    _write_shard(test / "extra.json", {"f0099": {"x": [[0.0, 0.0]], "y": [1]}})
    with pytest.raises(ClientDataError, match="only in train: \\[\\], only in test: \\['f0099'\\]"):
        load_leaf(train, test)


def test_num_samples_must_match_the_data(tmp_path):
    (tmp_path / "bad.json").write_text(
        json.dumps(
            {
                "users": ["u"],
                "num_samples": [2],
                "user_data": {"u": {"x": [[1.0]], "y": [0]}},
            }
        )
    )
    with pytest.raises(ClientDataError, match="num_samples=2 but 1"):
        load_leaf(tmp_path, tmp_path)


def test_string_features_like_shakespeare_are_kept(tmp_path):
    _write_shard(tmp_path / "s.json", {"ROMEO": {"x": ["to be or not to b"], "y": ["e"]}})
    train, _ = load_leaf(tmp_path, tmp_path)
    element = next(train.create_tf_dataset_for_client("ROMEO").as_numpy_iterator())
    assert element == {"x": b"to be or not to b", "y": b"e"}
