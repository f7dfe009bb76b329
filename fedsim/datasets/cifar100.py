"""Federated CIFAR-100 (Pachinko-allocation partition), from TFF's ``cifar100.sqlite.lzma``."""

from __future__ import annotations

import os

import tensorflow as tf

from fedsim.data import ClientData
from fedsim.datasets import cache_files
from fedsim.datasets.tff_sqlite import load_splits

FILE_NAME = cache_files.CIFAR100
FEATURES = {
    "coarse_label": tf.TensorSpec([], tf.int64),
    "image": tf.TensorSpec([32, 32, 3], tf.uint8),
    "label": tf.TensorSpec([], tf.int64),
}


def load_data(
    cache_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[ClientData, ClientData]:
    """``(train, test)``: 500 train and 100 test clients of 100 images each.

    Elements are ``{"coarse_label": int64 [] (0-19), "image": uint8 [32, 32, 3],
    "label": int64 [] (0-99)}``.
    """
    train, test = load_splits(FILE_NAME, ("train", "test"), FEATURES, cache_dir, download)
    return train, test
