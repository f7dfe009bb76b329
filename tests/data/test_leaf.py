import json

import numpy as np
import pytest

from fedsim.data import ClientDataError
from fedsim.data.leaf import LeafLabelError, count_leaf_users, load_leaf, read_leaf_split


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


def test_test_writers_may_differ_from_train_writers(leaf_dirs):
    # LEAF's split by user: FEMNIST ships 105 train writers and other test writers.
    train_dir, test_dir = leaf_dirs
    _write_shard(test_dir / "extra.json", {"f0099": {"x": [[0.0, 0.0], [1.0, 1.0]], "y": [1, 2]}})
    train, test = load_leaf(train_dir, test_dir)
    assert list(train.client_ids) == ["f0001", "f0002", "f0003"]
    assert list(test.client_ids) == ["f0001", "f0002", "f0003", "f0099"]
    assert test.num_examples("f0099") == 2


def test_clients_are_sorted_by_id_whatever_the_shard_order(tmp_path):
    # Shard files sort as a, b; their users do not: the population still sorts by id.
    _write_shard(tmp_path / "a.json", {"f0900": {"x": [[0.0]], "y": [0]}, "f0005": {"x": [[1.0]], "y": [1]}})
    _write_shard(tmp_path / "b.json", {"f0010": {"x": [[2.0]], "y": [2]}})
    train, _ = load_leaf(tmp_path, tmp_path)
    assert list(train.client_ids) == ["f0005", "f0010", "f0900"]


def test_a_single_json_file_is_a_split(leaf_dirs):
    train_dir, test_dir = leaf_dirs
    train, test = load_leaf(train_dir / "all_data_1_niid_train.json", test_dir / "all_data_0_niid_test.json")
    assert list(train.client_ids) == ["f0003"]
    assert [train.num_examples("f0003")] == [3]
    assert list(test.client_ids) == ["f0001", "f0002", "f0003"]


def test_a_missing_split_is_named(tmp_path):
    with pytest.raises(ClientDataError, match="nowhere.*does not exist"):
        load_leaf(tmp_path / "nowhere", tmp_path)


def test_float_labels_that_are_whole_numbers_become_integers(tmp_path):
    _write_shard(tmp_path / "s.json", {"u": {"x": [[0.0], [1.0]], "y": [3.0, 7.0]}})
    train, _ = load_leaf(tmp_path, tmp_path)
    labels = [e["y"] for e in train.create_tf_dataset_for_client("u").as_numpy_iterator()]
    assert labels == [3, 7]
    assert all(label.dtype == np.int64 for label in labels)


def test_a_fractional_label_is_refused(tmp_path):
    _write_shard(tmp_path / "s.json", {"u": {"x": [[0.0], [1.0]], "y": [1.0, 0.5]}})
    with pytest.raises(LeafLabelError, match=r"user 'u'.*label 0.5 at position 1 .*not a whole number"):
        load_leaf(tmp_path, tmp_path)
    assert issubclass(LeafLabelError, ClientDataError)  # the CLI prints it without a traceback


def test_user_counts_come_from_the_users_lists(leaf_dirs):
    train_dir, test_dir = leaf_dirs
    assert count_leaf_users(train_dir) == 3
    assert count_leaf_users(test_dir / "all_data_0_niid_test.json") == 3


def test_user_count_is_unknown_when_users_is_not_the_first_key(tmp_path):
    content = {"num_samples": [1], "users": ["u"], "user_data": {"u": {"x": [[0.0]], "y": [0]}}}
    (tmp_path / "s.json").write_text(json.dumps(content))
    assert count_leaf_users(tmp_path) is None


def test_user_count_reads_a_long_users_list(tmp_path):
    # Longer than the first read (4 KiB), so the reader has to read on.
    users = {f"writer_{i:05d}_with_a_long_name": {"x": [[0.0]], "y": [0]} for i in range(400)}
    _write_shard(tmp_path / "s.json", users)
    assert count_leaf_users(tmp_path) == 400


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


def test_a_user_without_samples_gets_the_feature_shape_of_the_others(tmp_path):
    # JSON's [] has no shape: without this the split's users would disagree on their element spec.
    _write_shard(tmp_path / "s.json", {"a": {"x": [[1.0, 2.0]], "y": [1]}, "b": {"x": [], "y": []}})
    users = read_leaf_split(tmp_path)
    assert users["b"]["x"].shape == (0, 2) and users["b"]["x"].dtype == np.float32
    assert users["b"]["y"].dtype == np.int64


def test_integer_features_follow_other_users_floats(tmp_path):
    _write_shard(tmp_path / "s.json", {"a": {"x": [[1.5, 2.0]], "y": [1]}, "b": {"x": [[1, 0]], "y": [0]}})
    users = read_leaf_split(tmp_path)
    assert users["b"]["x"].dtype == np.float32
    np.testing.assert_array_equal(users["b"]["x"], [[1.0, 0.0]])


def test_a_train_split_without_samples_is_refused(tmp_path):
    _write_shard(tmp_path / "s.json", {"a": {"x": [], "y": []}})
    with pytest.raises(ClientDataError, match="no user of the LEAF train split .* has a sample"):
        load_leaf(tmp_path, tmp_path)


def test_a_directory_named_like_a_shard_is_refused(tmp_path):
    _write_shard(tmp_path / "a.json", {"u": {"x": [[0.0]], "y": [0]}})
    (tmp_path / "b.json").mkdir()
    with pytest.raises(ClientDataError, match=r"b\.json is a directory .*not a LEAF shard"):
        read_leaf_split(tmp_path)


def test_deeply_nested_json_names_the_shard(tmp_path):
    (tmp_path / "s.json").write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(ClientDataError, match=r"s\.json nests JSON .* deeper than the reader allows"):
        read_leaf_split(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda shard: shard["user_data"].update(ghost={"x": [], "y": []}), "user 'ghost' has `user_data` but is not in"),
    (lambda shard: (shard["users"].append("u"), shard["num_samples"].append(1)), "user 'u' is listed twice"),
])
def test_users_and_user_data_must_match(tmp_path, change, message):
    shard = {"users": ["u"], "num_samples": [1], "user_data": {"u": {"x": [[0.0]], "y": [0]}}}
    change(shard)
    (tmp_path / "s.json").write_text(json.dumps(shard))
    with pytest.raises(ClientDataError, match=message):
        read_leaf_split(tmp_path)
