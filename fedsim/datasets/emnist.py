"""Federated EMNIST (LEAF's EMNIST grouped by writer), from TFF's ``emnist_all.sqlite.lzma``."""

from __future__ import annotations

import os

import tensorflow as tf

from fedsim.data import ClientData
from fedsim.datasets import cache_files
from fedsim.datasets.tff_sqlite import load_splits

FILE_NAME = cache_files.EMNIST
FEATURES = {
    "label": tf.TensorSpec([], tf.int32),
    "pixels": tf.TensorSpec([28, 28], tf.float32),
}


def load_data(
    only_digits: bool = True, cache_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[ClientData, ClientData]:
    """``(train, test)`` populations of Federated EMNIST, one client per writer.

    Elements are ``{"label": int32 [], "pixels": float32 [28, 28]}`` with
    pixels in [0, 1] and 1.0 the background (TFF's convention). With
    ``only_digits`` 3,383 writers and 10 labels, otherwise 3,400 writers and
    62 labels. ``cache_dir`` defaults to ``~/.cache/fedsim/datasets``;
    ``download=False`` never touches the network.
    """
    prefix = "digits_only" if only_digits else "all"
    train, test = load_splits(
        FILE_NAME, (f"{prefix}_train", f"{prefix}_test"), FEATURES, cache_dir, download
    )
    return train, test
