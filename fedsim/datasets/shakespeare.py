"""Federated Shakespeare (LEAF; a client per speaking role), from ``shakespeare.sqlite.lzma``."""

from __future__ import annotations

import os

import tensorflow as tf

from fedsim.data import ClientData
from fedsim.datasets import cache_files
from fedsim.datasets.tff_sqlite import load_splits

FILE_NAME = cache_files.SHAKESPEARE
FEATURES = {"snippets": tf.TensorSpec([], tf.string)}


def load_data(
    cache_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[ClientData, ClientData]:
    """``(train, test)`` populations of 715 roles; elements are ``{"snippets": string []}``.

    Turn snippets into model inputs with
    ``fedsim.data.preprocessing.next_char_sequences``.
    """
    train, test = load_splits(FILE_NAME, ("train", "test"), FEATURES, cache_dir, download)
    return train, test
