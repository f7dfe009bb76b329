import lzma

import numpy as np
import pytest
import tensorflow as tf

from fedsim.data import ClientData, DatasetNotFoundError, write_sql_client_data
from fedsim.datasets import cifar100, emnist, shakespeare, stackoverflow, tff_sqlite


def _emnist_client(seed):
    rng = np.random.default_rng(seed)
    return {"label": np.array([3, 7]), "pixels": rng.uniform(size=(2, 28, 28)).astype(np.float32)}


def _write_tff_file(cache_dir, file_name, splits):
    """Writes ``{split: {client: arrays}}`` as TFF's decompressed file in ``cache_dir``."""
    path = cache_dir / file_name.removesuffix(".lzma")
    write_sql_client_data(
        path, {name: ClientData.from_tensor_slices(c) for name, c in splits.items()}
    )
    return path


def test_emnist_reads_the_split_named_by_only_digits(tmp_path):
    _write_tff_file(
        tmp_path,
        "emnist_all.sqlite.lzma",
        {
            "digits_only_train": {"w1": _emnist_client(0), "w2": _emnist_client(1)},
            "digits_only_test": {"w1": _emnist_client(2)},
            "all_train": {"w3": _emnist_client(3)},
            "all_test": {"w3": _emnist_client(4)},
        },
    )
    train, test = emnist.load_data(only_digits=True, cache_dir=tmp_path, download=False)
    assert list(train.client_ids) == ["w1", "w2"] and list(test.client_ids) == ["w1"]
    assert train.element_type_structure == {
        "label": tf.TensorSpec([], tf.int32),
        "pixels": tf.TensorSpec([28, 28], tf.float32),
    }
    element = next(train.create_tf_dataset_for_client("w2").as_numpy_iterator())
    np.testing.assert_array_equal(element["pixels"], _emnist_client(1)["pixels"][0])
    assert element["label"] == 3
    all_train, _ = emnist.load_data(only_digits=False, cache_dir=tmp_path, download=False)
    assert list(all_train.client_ids) == ["w3"]


def test_shakespeare_stackoverflow_and_cifar100_have_tffs_element_structures(tmp_path):
    _write_tff_file(
        tmp_path,
        shakespeare.FILE_NAME,
        {
            split: {"ROMEO": {"snippets": np.array(["But soft", "what light"])}}
            for split in ("train", "test")
        },
    )
    so_client = {
        "creation_date": np.array(["2010-01-08 09:34:05 UTC"]),
        "score": np.array([172]),
        "tags": np.array(["sql|median"]),
        "title": np.array(["median in sql"]),
        "tokens": np.array(["use percentile_cont ."]),
        "type": np.array(["answer"]),
    }
    _write_tff_file(
        tmp_path,
        stackoverflow.FILE_NAME,
        {s: {"42": so_client} for s in ("train", "heldout", "test")},
    )
    cifar_client = {
        "coarse_label": np.array([4]),
        "image": np.full((1, 32, 32, 3), 200, np.uint8),
        "label": np.array([51]),
    }
    _write_tff_file(
        tmp_path, cifar100.FILE_NAME, {s: {"0": cifar_client} for s in ("train", "test")}
    )

    shakespeare_train, _ = shakespeare.load_data(cache_dir=tmp_path, download=False)
    assert shakespeare_train.element_type_structure == {"snippets": tf.TensorSpec([], tf.string)}
    snippets = [
        e["snippets"]
        for e in shakespeare_train.create_tf_dataset_for_client("ROMEO").as_numpy_iterator()
    ]
    assert snippets == [b"But soft", b"what light"]

    so_train, so_heldout, so_test = stackoverflow.load_data(cache_dir=tmp_path, download=False)
    assert so_heldout.element_type_structure == {
        **{
            key: tf.TensorSpec([], tf.string)
            for key in ("creation_date", "tags", "title", "tokens", "type")
        },
        "score": tf.TensorSpec([], tf.int64),
    }
    assert next(so_test.create_tf_dataset_for_client("42").as_numpy_iterator())["score"] == 172

    cifar_train, _ = cifar100.load_data(cache_dir=tmp_path, download=False)
    assert cifar_train.element_type_structure == {
        "coarse_label": tf.TensorSpec([], tf.int64),
        "image": tf.TensorSpec([32, 32, 3], tf.uint8),
        "label": tf.TensorSpec([], tf.int64),
    }
    element = next(cifar_train.create_tf_dataset_for_client("0").as_numpy_iterator())
    assert (
        element["image"].dtype == np.uint8
        and element["image"][5, 5, 1] == 200
        and element["label"] == 51
    )


def test_a_compressed_file_in_the_cache_is_decompressed(tmp_path):
    path = _write_tff_file(
        tmp_path,
        shakespeare.FILE_NAME,
        {split: {"ROMEO": {"snippets": np.array(["Hello"])}} for split in ("train", "test")},
    )
    (tmp_path / shakespeare.FILE_NAME).write_bytes(lzma.compress(path.read_bytes()))
    path.unlink()
    train, _ = shakespeare.load_data(cache_dir=tmp_path, download=False)
    assert train.num_examples("ROMEO") == 1 and path.is_file()


def test_missing_file_with_downloads_disabled_says_what_to_place_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        emnist.load_data(cache_dir=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "emnist_all.sqlite") in message
    assert str(tmp_path / "emnist_all.sqlite.lzma") in message
    assert tff_sqlite.TFF_DATASETS_URL + "emnist_all.sqlite.lzma" in message


def test_fetch_decompresses_a_stream_from_a_url(tmp_path):
    source = tmp_path / "remote.sqlite.lzma"
    source.write_bytes(lzma.compress(b"sqlite bytes"))
    target = tmp_path / "cache" / "remote.sqlite"
    tff_sqlite.fetch_lzma(source.as_uri(), target)  # a file:// URL: no network
    assert target.read_bytes() == b"sqlite bytes"
    assert [p.name for p in target.parent.iterdir()] == ["remote.sqlite"]
