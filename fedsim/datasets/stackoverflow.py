"""Federated Stack Overflow (one client per user), from TFF's ``stackoverflow.sqlite.lzma``."""

from __future__ import annotations

import os

import tensorflow as tf

from fedsim.data import ClientData
from fedsim.datasets import cache_files
from fedsim.datasets.tff_sqlite import load_splits

FILE_NAME = cache_files.STACKOVERFLOW
FEATURES = {
    "creation_date": tf.TensorSpec([], tf.string),
    "score": tf.TensorSpec([], tf.int64),
    "tags": tf.TensorSpec([], tf.string),
    "title": tf.TensorSpec([], tf.string),
    "tokens": tf.TensorSpec([], tf.string),
    "type": tf.TensorSpec([], tf.string),
}


def load_data(
    cache_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[ClientData, ClientData, ClientData]:
    """``(train, heldout, test)`` populations, as TFF's loader (the file has these three splits).

    Elements are ``{"creation_date", "tags" ('|'-separated), "title", "tokens"
    (space-separated), "type" ('question' or 'answer'): string [], "score": int64 []}``.
    The decompressed file is large (tens of GB); reading a client touches only its rows.
    """
    train, heldout, test = load_splits(
        FILE_NAME, ("train", "heldout", "test"), FEATURES, cache_dir, download
    )
    return train, heldout, test
