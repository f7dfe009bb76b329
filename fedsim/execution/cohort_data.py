"""A cohort's batched client datasets as one padded array per leaf.

Client ``c``'s ``k``-th batch becomes ``x[c, k]`` (and ``y[c, k]``), padded
with zeros to the largest batch and the longest client of the cohort;
``mask[c, k, i]`` is 1 for real examples and 0 for padding.

Each client is read once into NumPy (``ArrayDataset``s directly, other
datasets by one graph call) and the cohort is stacked with NumPy, so the
compiled cohort step takes four arrays (plus the weights) whatever the
cohort size: every argument of a ``tf.function`` call costs Python time
to bind, which for small models is a visible part of a round.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs
import numpy as np
import tensorflow as tf

from fedsim.data.array_dataset import ArrayDataset
from fedsim.models.keras_model import split_batch


@attrs.frozen
class ClientTensors:
    """One client: leaves shaped ``[num_batches, max_batch_size, ...]``; ``mask`` 1 for real examples.

    ``client_tensors`` builds it from tensors inside a graph; ``as_numpy`` and
    ``array_client_tensors`` give the NumPy form that ``stack_clients`` takes.
    """

    x: Any
    y: Any
    mask: Any

    def as_numpy(self) -> "ClientTensors":
        return tf.nest.map_structure(lambda t: t.numpy(), self)


@attrs.frozen
class CohortTensors:
    """Padded cohort data: NumPy leaves shaped ``[clients, max_batches, max_batch_size, ...]``."""

    x: Any
    y: Any
    mask: np.ndarray  # float32 [clients, max_batches, max_batch_size]
    num_batches: np.ndarray  # int32 [clients]


def _zero(spec: tf.TensorSpec) -> tf.Tensor:
    return tf.constant("") if spec.dtype == tf.string else tf.zeros([], spec.dtype)


def _one(dtype: tf.DType) -> tf.Tensor:
    if dtype == tf.string:
        return tf.constant("\x00pad")
    return tf.ones([], dtype)


def _bits(tensor: tf.Tensor) -> tf.Tensor:
    # Compare floats bit by bit: a real NaN must still count as equal to itself.
    if tensor.dtype.is_floating:
        return tf.bitcast(tensor, {2: tf.int16, 4: tf.int32, 8: tf.int64}[tensor.dtype.size])
    return tensor


def _count(dataset: tf.data.Dataset) -> tf.Tensor:
    # Batched tensor slices know their length; a filtered dataset is counted.
    known = dataset.cardinality()
    return tf.cond(known >= 0, lambda: known, lambda: dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def _all_batches(dataset: tf.data.Dataset, padding_values: Any, count: tf.Tensor) -> Any:
    """Every batch in one element ``[num_batches, max_batch_size, ...]`` (empty for no batches)."""
    whole = dataset.padded_batch(tf.maximum(count, 1), padding_values=padding_values)
    empty = tf.nest.map_structure(
        lambda spec: tf.zeros([0, 0] + spec.shape[1:].as_list(), spec.dtype), dataset.element_spec
    )
    return whole.concatenate(tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()


def client_tensors(dataset: tf.data.Dataset, single_pass: bool = False) -> ClientTensors:
    """One client's batches as padded tensors (call inside a ``tf.function``).

    ``single_pass=True`` reads the dataset once, for datasets that may differ
    between reads (a shuffle reshuffles on every iteration); otherwise the
    mask comes from two reads, which is cheaper but right only when both
    reads give the same batches (``is_static`` datasets).
    """
    spec = dataset.element_spec
    count = _count(dataset)
    if single_pass:
        padded = _all_batches(_with_mask(dataset), (tf.nest.map_structure(_zero, spec), tf.constant(0.0)), count)
        x, y = split_batch(padded[0])
        return ClientTensors(x, y, padded[1])
    zeros = _all_batches(dataset, tf.nest.map_structure(_zero, spec), count)
    ones = _all_batches(dataset, tf.nest.map_structure(lambda s: _one(s.dtype), spec), count)
    x, y = split_batch(zeros)
    # No per-batch function runs (a ``map`` costs about 0.1 ms per batch): an
    # example is real where the zero- and one-padded copies agree.
    same = tf.equal(_bits(tf.nest.flatten(y)[0]), _bits(tf.nest.flatten(split_batch(ones)[1])[0]))
    mask = tf.reduce_all(tf.reshape(same, tf.concat([tf.shape(same)[:2], [-1]], 0)), axis=2)
    return ClientTensors(x, y, tf.cast(mask, tf.float32))


def _with_mask(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each batch paired with ones, one per example: padded, they are the mask."""

    def add(*element):
        element = element[0] if len(element) == 1 else element  # tf.data unpacks tuples
        return element, tf.ones(tf.shape(tf.nest.flatten(element)[0])[:1], tf.float32)

    return dataset.map(add)


def array_client_tensors(dataset: tf.data.Dataset) -> Optional[ClientTensors]:
    """``client_tensors`` without running tf.data, for a batched ``ArrayDataset``; else ``None``.

    Populations built from in-memory arrays (``ClientData.from_tensor_slices``)
    hand out ``ArrayDataset``s, and the round's ``batch``/``repeat`` keep them
    lazy, so a new client is padded with NumPy here and no tf.data graph is
    ever built for it (building and reading one costs ~3 ms per client, most
    of a small model's round when most clients are new). The result equals
    ``client_tensors`` of the equivalent tf.data pipeline.
    """
    if not isinstance(dataset, ArrayDataset):
        return None
    batched = dataset.batched_arrays()
    if batched is None:
        return None
    batches, mask = batched
    x, y = split_batch(batches)
    return ClientTensors(x, y, mask)


# TensorFlow's CPU allocator aligns tensors to 64 bytes; a tensor may share a
# NumPy array's memory (``as_tensor``) only when the array is aligned so too.
_ALIGNMENT = 64


def aligned_empty(shape: tuple, dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a 64-byte boundary, so that ``as_tensor`` need not copy it.

    (NumPy aligns large arrays to 16 bytes only.)
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def as_tensor(array: np.ndarray) -> tf.Tensor:
    """``array`` as a CPU tensor, sharing its memory (DLPack) when it is a 64-byte-aligned numeric C array.

    ``tf.convert_to_tensor`` copies every array (19 ms for a 77 MB cohort);
    TensorFlow can use aligned memory as is, but aborts the process on an
    unaligned one, hence the checks. The tensor shares the array's memory
    (and keeps it alive): writing the array changes the tensor.
    """
    if (array.dtype.kind in "fiu" and array.size and array.flags.c_contiguous and array.flags.writeable
            and array.ctypes.data % _ALIGNMENT == 0):
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


def stack_clients(clients: Sequence[ClientTensors], clients_to=0, batches_to=0, batch_size_to=0) -> CohortTensors:
    """Pads NumPy clients to a common shape and stacks them (see ``CohortTensors``).

    The batch and batch-size axes are padded to the cohort's largest or to
    ``batches_to``/``batch_size_to`` when larger; ``clients_to`` adds empty
    clients (no batches) at the end. Numeric arrays are 64-byte-aligned
    (``aligned_empty``): the compiled step takes them through ``as_tensor``
    without a copy, which for 1,000 logreg clients (32 chunks of 2.4 MB)
    halved stacking plus conversion, 48 to 24 ms a round.
    """
    shapes = [c.mask.shape for c in clients]
    batches = max([batches_to] + [s[0] for s in shapes])
    width = max([batch_size_to] + [s[1] for s in shapes])
    rows = max(clients_to, len(clients))

    def stacked(leaves):
        first = leaves[0]
        shape = (rows, batches, width) + first.shape[2:]
        out = np.empty(shape, first.dtype) if first.dtype == object else aligned_empty(shape, first.dtype)
        padding = b"" if first.dtype == object else 0  # strings: tf.data pads them with ""
        # Every element is written once: the clients' values, padding only where a client is short.
        for c, leaf in enumerate(leaves):
            if leaf.shape[:2] != (batches, width):
                out[c] = padding
            out[c, :leaf.shape[0], :leaf.shape[1]] = leaf
        out[len(leaves):] = padding
        return out

    per_client = [tf.nest.flatten((c.x, c.y, c.mask)) for c in clients]
    leaves = [stacked(same) for same in zip(*per_client)]
    x, y, mask = tf.nest.pack_sequence_as((clients[0].x, clients[0].y, clients[0].mask), leaves)
    return CohortTensors(
        x=x, y=y, mask=mask,
        num_batches=np.array([s[0] for s in shapes] + [0] * (rows - len(clients)), np.int32),
    )


# tf.data transformations whose output depends only on their inputs and
# arguments (no random ops, no user functions): a chain of these over in-memory
# tensors yields the same batches every time it is read, so it can be read once.
_STATIC_DATASETS = frozenset({
    "_TensorSliceDataset", "_TensorDataset", "_RangeDataset", "_BatchDataset", "_PaddedBatchDataset",
    "_RepeatDataset", "_TakeDataset", "_SkipDataset", "_ConcatenateDataset", "_ZipDataset",
    "_OptionsDataset", "_PrefetchDataset", "_CacheDataset", "_UnbatchDataset", "_RebatchDataset",
})


def is_static(dataset: tf.data.Dataset) -> bool:
    """Whether reading ``dataset`` again always gives the same batches (see ``_STATIC_DATASETS``)."""
    if isinstance(dataset, ArrayDataset):
        return True  # arrays it never changes, batched and repeated (nothing random)
    if type(dataset).__name__ not in _STATIC_DATASETS:
        return False
    return all(is_static(parent) for parent in dataset._inputs())  # noqa: SLF001  (tf.data's own graph walk)
