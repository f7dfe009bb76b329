"""``ArrayDataset``: a ``tf.data.Dataset`` over in-memory arrays whose graph is built only when read.

Building a tf.data pipeline is eager Python work: ``from_tensor_slices`` costs
about 0.6 ms and ``.batch`` about 1.5 ms per client on this project's
benchmark machine. A simulation touches new clients every round (with 3,400
EMNIST writers and 10 per round, nearly every sampled client is new for
hundreds of rounds), so for small models that cost is most of a round.

An ``ArrayDataset`` keeps the arrays and the two transformations a federated
round applies to them (``batch(n)`` and ``repeat(k)``) as plain Python values.
It *is* a ``tf.data.Dataset``: anything else (iterating it, passing it to a
``tf.function``, any other transformation) builds the equivalent tf.data
pipeline on first use, so it behaves exactly as
``tf.data.Dataset.from_tensor_slices(arrays).batch(n).repeat(k)`` would. The
vectorized executor reads ``batched_arrays()`` directly and never builds it.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf


class ArrayDataset(tf.data.Dataset):
    """The examples of ``arrays`` (a nest of NumPy arrays sharing their first axis), optionally batched and repeated.

    Use ``ArrayDataset.from_arrays``; ``batch``/``repeat`` with default options
    stay lazy, everything else is plain tf.data.
    """

    def __init__(self, arrays: Any, batch_size: Optional[int] = None, repeats: int = 1):
        self._arrays = arrays
        self._batch_size = batch_size
        self._repeats = repeats
        self._materialized: Optional[tf.data.Dataset] = None
        example_spec = tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape[1:], tf.as_dtype(a.dtype)), arrays)
        if batch_size is not None:
            # tf.data's batch without drop_remainder leaves the batch dimension unknown.
            example_spec = tf.nest.map_structure(
                lambda s: tf.TensorSpec([None] + s.shape.as_list(), s.dtype), example_spec)
        self._spec = example_spec
        super().__init__(None)  # the variant tensor is built on first use (see _variant_tensor)

    @classmethod
    def from_arrays(cls, arrays: Any) -> tf.data.Dataset:
        """An ``ArrayDataset`` of ``arrays``' slices; a plain tf.data dataset for string arrays.

        Strings stay on tf.data, whose padding and dtypes for them differ from NumPy's.

        Raises:
          ValueError: when a leaf is a scalar or the leaves disagree on their first (example) axis.
        """
        arrays = tf.nest.map_structure(np.asarray, arrays)
        lengths = [a.shape[0] if a.ndim else None for a in tf.nest.flatten(arrays)]
        if None in lengths or len(set(lengths)) != 1:
            raise ValueError(
                f"every array needs the same first (example) axis, got lengths {lengths} (None: a scalar); "
                "pass arrays shaped [num_examples, ...]"
            )
        if any(a.dtype.kind in "USO" for a in tf.nest.flatten(arrays)):
            return tf.data.Dataset.from_tensor_slices(arrays)
        return cls(arrays)

    # What stays lazy ---------------------------------------------------------
    def batch(self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None, name=None):
        if (self._batch_size is None and self._repeats == 1 and not drop_remainder and num_parallel_calls is None
                and deterministic is None and name is None and _positive_int(batch_size)):
            return ArrayDataset(self._arrays, int(batch_size))
        return super().batch(batch_size, drop_remainder, num_parallel_calls, deterministic, name)

    def repeat(self, count=None, name=None):
        if self._batch_size is not None and name is None and _positive_int(count):
            return ArrayDataset(self._arrays, self._batch_size, self._repeats * int(count))
        return super().repeat(count, name)

    def cardinality(self):
        return tf.constant(self._num_elements(), tf.int64)

    @property
    def element_spec(self) -> Any:
        return self._spec

    @property
    def num_examples(self) -> int:
        """Examples in one pass over the arrays."""
        return len(tf.nest.flatten(self._arrays)[0])

    def batched_arrays(self) -> Optional[tuple[Any, np.ndarray]]:
        """Every batch at once as ``(batches, mask)``, or ``None`` when unbatched.

        ``batches`` is ``arrays``' nest with leaves shaped ``[num_batches, width, ...]``,
        where ``width`` is the batch size (or every example, when fewer); the last
        batch of each pass is zero-padded and ``mask[k, i]`` is 1.0 for real
        examples. Repeats follow the pass: batch ``k`` of pass ``r`` is batch ``k``.
        """
        if self._batch_size is None:
            return None
        examples = self.num_examples
        per_pass = -(-examples // self._batch_size)
        width = min(self._batch_size, examples)

        def batched(leaf: np.ndarray) -> np.ndarray:
            padded = np.zeros((per_pass * width,) + leaf.shape[1:], leaf.dtype)
            padded[:examples] = leaf
            padded = padded.reshape((per_pass, width) + leaf.shape[1:])
            return np.tile(padded, (self._repeats,) + (1,) * (padded.ndim - 1)) if self._repeats > 1 else padded

        mask = (np.arange(per_pass * width) < examples).astype(np.float32).reshape(per_pass, width)
        return tf.nest.map_structure(batched, self._arrays), np.tile(mask, (self._repeats, 1))

    def numpy_elements(self):
        """The elements iteration yields, one NumPy nest each, without building a tf.data pipeline."""
        for run in self.stacked_elements():
            for index in range(len(tf.nest.flatten(run)[0])):
                yield tf.nest.map_structure(lambda leaf: leaf[index], run)

    def stacked_elements(self) -> list:
        """The elements iteration yields, as NumPy runs: consecutive equal-shaped elements stacked.

        Each run is ``arrays``' nest with a new leading element axis: a
        client of ``n`` full batches and a partial one is two runs, not
        ``n + 1`` elements (the form ``ray_datasets.export_dataset`` ships),
        read without building a tf.data pipeline.
        """
        examples, size = self.num_examples, self._batch_size
        if size is None:  # elements are examples (repeat is not lazy here, so one pass)
            pieces = [lambda a: a] if examples else []
        else:
            full = examples // size * size
            pieces = [lambda a: a[:full].reshape((full // size, size) + a.shape[1:])] if full else []
            if examples > full:
                pieces.append(lambda a: a[full:][np.newaxis])
        runs: list = []
        for piece in pieces * self._repeats:
            run = tf.nest.map_structure(piece, self._arrays)
            last = runs[-1] if runs else None
            if last is not None and all(
                    a.shape[1:] == b.shape[1:] for a, b in zip(tf.nest.flatten(last), tf.nest.flatten(run))):
                run = tf.nest.map_structure(lambda a, b: np.concatenate([a, b]), last, run)
                runs[-1] = run
            else:
                runs.append(run)
        return runs

    # tf.data plumbing ----------------------------------------------------------
    def _num_elements(self) -> int:
        if self._batch_size is None:
            return self.num_examples
        return -(-self.num_examples // self._batch_size) * self._repeats

    def materialize(self) -> tf.data.Dataset:
        """The equivalent plain tf.data pipeline (built once, then kept)."""
        if self._materialized is not None:
            return self._materialized
        dataset = tf.data.Dataset.from_tensor_slices(self._arrays)
        if self._batch_size is not None:
            dataset = dataset.batch(self._batch_size)
        if self._repeats > 1:
            dataset = dataset.repeat(self._repeats)
        if tf.executing_eagerly():  # a pipeline built while tracing belongs to that graph: don't keep it
            self._materialized = dataset
        return dataset

    @property
    def _variant_tensor(self):
        return self.materialize()._variant_tensor  # noqa: SLF001  (tf.data's own field)

    def _inputs(self):
        return []


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0
