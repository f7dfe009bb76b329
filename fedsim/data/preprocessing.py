"""Preprocessing helpers: each returns a ``Dataset -> Dataset`` function.

Combine them with ``compose`` and apply with ``client_data.preprocess(...)``::

    train = train.preprocess(compose(
        select("pixels", "label"), flatten(), shuffle(100, seed=round_seed(7, round_num)),
        repeat(local_epochs), batch(20), take(max_batches)))

Python values (such as a shuffle seed) are fixed when the function is traced,
once per preprocessed population; build a new population per round to change
them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from fedsim.data.errors import ClientDataError

PreprocessFn = Callable[[tf.data.Dataset], tf.data.Dataset]


def compose(*fns: PreprocessFn) -> PreprocessFn:
    """Applies ``fns`` left to right."""

    def composed(dataset: tf.data.Dataset) -> tf.data.Dataset:
        for fn in fns:
            dataset = fn(dataset)
        return dataset

    return composed


def batch(batch_size: int, drop_remainder: bool = False) -> PreprocessFn:
    _check_positive("batch_size", batch_size)
    return lambda dataset: dataset.batch(batch_size, drop_remainder=drop_remainder)


def shuffle(buffer_size: int, seed: int) -> PreprocessFn:
    """Shuffles with a fixed ``seed``; pass ``round_seed(base, round_num)`` to vary it per round."""
    _check_positive("buffer_size", buffer_size)
    return lambda dataset: dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)


def round_seed(base_seed: int, round_num: int) -> int:
    """A well-mixed 31-bit seed for one round, derived from ``(base_seed, round_num)``."""
    return int(np.random.SeedSequence([base_seed, round_num]).generate_state(1)[0] >> 1)


def repeat(epochs: int) -> PreprocessFn:
    """Repeats the data ``epochs`` times (local epochs)."""
    _check_positive("epochs", epochs)
    return lambda dataset: dataset.repeat(epochs)


def take(max_elements: int) -> PreprocessFn:
    """At most ``max_elements`` elements (batches, when applied after ``batch``)."""
    _check_positive("max_elements", max_elements)
    return lambda dataset: dataset.take(max_elements)


def reshape(shape: Sequence[int], key: str | int = 0) -> PreprocessFn:
    """Reshapes feature ``key`` of each element to ``shape`` (``-1`` allowed once).

    ``key`` names a feature of dict elements or a position in tuple elements
    (default 0: ``x`` of ``(x, y)``).
    """
    return _map_feature(lambda tensor: tf.reshape(tensor, shape), key)


def flatten(key: str | int = 0) -> PreprocessFn:
    """Flattens feature ``key`` of each element to one axis, e.g. 28x28 pixels to 784."""
    return reshape([-1], key)


def select(x_key: str, y_key: str) -> PreprocessFn:
    """Turns ``{x_key: x, y_key: y, ...}`` elements into ``(x, y)`` tuples for Keras."""
    return lambda dataset: dataset.map(lambda element: (element[x_key], element[y_key]))


def _map_feature(fn: Callable[[tf.Tensor], tf.Tensor], key: str | int) -> PreprocessFn:
    def on_element(*element):
        # tf.data passes tuple elements as separate arguments and anything else as one.
        element = element if len(element) > 1 else element[0]
        if isinstance(element, dict) and key in element:
            return {**element, key: fn(element[key])}
        if (
            isinstance(element, tuple)
            and isinstance(key, int)
            and -len(element) <= key < len(element)
        ):
            return tuple(
                fn(item) if i == key % len(element) else item for i, item in enumerate(element)
            )
        if isinstance(element, tf.Tensor) and key == 0:
            return fn(element)
        raise ClientDataError(f"elements have no feature {key!r}; an element looks like {element}")

    return lambda dataset: dataset.map(on_element)


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ClientDataError(f"{name} must be a positive integer, got {value}")


# Shakespeare next-character prediction ------------------------------------
# The fixed vocabulary of TFF's text-generation tutorial (ASCII characters of
# Shakespeare and Dickens). Id 0 pads; characters take ids 1..len(CHAR_VOCAB).
CHAR_VOCAB = list(
    "dhlptx@DHLPTX $(,048cgkoswCGKOSW[_#'/37;?bfjnrvzBFJNRVZ\"&*.26:\naeimquyAEIMQUY]!%)-159\r"
)
PAD_ID = 0
OOV_ID = len(CHAR_VOCAB) + 1
BOS_ID = len(CHAR_VOCAB) + 2
EOS_ID = len(CHAR_VOCAB) + 3
CHAR_VOCAB_SIZE = len(CHAR_VOCAB) + 4


def _byte_to_id() -> np.ndarray:
    table = np.full(256, OOV_ID, dtype=np.int64)
    table[[ord(char) for char in CHAR_VOCAB]] = np.arange(1, len(CHAR_VOCAB) + 1)
    return table


_BYTE_TO_ID = _byte_to_id()


def char_ids(text: tf.Tensor) -> tf.Tensor:
    """The ids of a scalar string's bytes; bytes outside ``CHAR_VOCAB`` become ``OOV_ID``."""
    text_bytes = tf.cast(tf.io.decode_raw(text, tf.uint8), tf.int32)
    return tf.gather(tf.constant(_BYTE_TO_ID), text_bytes)


def next_char_sequences(sequence_length: int = 80, key: str = "snippets") -> PreprocessFn:
    """Snippets to ``(input, target)`` pairs of ``sequence_length`` int64 ids, shifted by one.

    As TFF's Shakespeare baseline: each snippet becomes ``BOS ids EOS``, padded
    with ``PAD_ID`` to a multiple of ``sequence_length + 1`` and cut into
    chunks; a chunk's first ``sequence_length`` ids are the input and its last
    ``sequence_length`` the target. Batch afterwards.
    """
    _check_positive("sequence_length", sequence_length)
    chunk_length = sequence_length + 1

    def to_padded_ids(element) -> tf.Tensor:
        ids = tf.concat([[BOS_ID], char_ids(element[key]), [EOS_ID]], axis=0)
        padding = tf.math.floormod(-tf.shape(ids)[0], chunk_length)
        return tf.concat([ids, tf.fill([padding], tf.constant(PAD_ID, tf.int64))], axis=0)

    def fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
        chunks = dataset.map(to_padded_ids).unbatch().batch(chunk_length, drop_remainder=True)
        return chunks.map(lambda chunk: (chunk[:-1], chunk[1:]))

    return fn
