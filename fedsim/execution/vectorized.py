"""The vectorized executor: a whole cohort trains in one compiled call.

For small models, a round costs per-client overhead (one graph call, a dataset
iterator and a few dozen tiny kernels per batch per client), not arithmetic.
Here each client's batches are read into padded arrays (once, for static
datasets) and the cohort trains in one compiled call, in one of two ways
(``cohort_steps``; ``xla_rules.xla_blocker`` picks):

- small dense models (on CPU, at most ``xla_rules.XLA_MAX_PARAMETERS_ON_CPU``
  parameters; on GPUs, every dense model): local step ``k`` of all clients
  together under ``tf.vectorized_map``, compiled with XLA; clients that have
  run out of batches keep their weights, and padded examples are masked (see
  ``keras_step``). Results are the sequential executor's to float rounding.
- other models: a graph loop over clients, two at a time, each on its own
  batches; results are the sequential executor's bit for bit.
"""
from __future__ import annotations

import threading
import weakref
from functools import partial
from typing import Any, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from fedsim.client.keras_step import KerasClientStep, vectorization_blocker
from fedsim.execution.cohort_data import (
    ClientTensors, array_client_tensors, as_tensor, client_tensors, is_static, stack_clients)
from fedsim.execution.cohort_steps import client_loop_steps, masked_steps, start_statistics
from fedsim.execution.failures import isolate_failures, with_defaults
from fedsim.execution.cohort_io import (
    VectorizationError, client_outputs, cohort_inputs_as_arrays, cohort_non_trainable, cohort_rng_states)
from fedsim.execution.sequential import SequentialExecutor
from fedsim.execution.xla_rules import xla_blocker, xla_result_blocker


def cohort_blocker(client_work: Any):
    """Why ``client_work`` cannot train as a batched cohort, or ``None``."""
    return vectorization_blocker(client_work)


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class CohortTrainer:
    """The compiled cohort computation: ``(weights, datasets) -> per-client results``.

    Holds no model state (no variables), so one instance can run on several
    devices at once. Each client's dataset is read into padded NumPy arrays
    (directly for a batched ``ArrayDataset``, else by one compiled function);
    a static dataset (see ``cohort_data.is_static``) is read once and kept
    while the dataset object lives, so a population that hands out the same
    dataset objects every round is read once per client, not once per round.
    The cohort is stacked with NumPy (``stack_clients``) and goes into the
    compiled step loop as four arrays.

    Args:
      client_work: a client work ``cohort_blocker`` accepts.
      xla: train with ``cohort_steps.masked_steps`` under XLA (True) or with
        ``client_loop_steps`` as a plain graph (False); default: XLA unless
        ``xla_blocker`` objects. True for a model whose results XLA would
        change (``xla_result_blocker``) raises ``VectorizationError``.
      max_chunk: the most clients trained in one compiled call (see ``__call__``).

    Tracing: the graph path is traced once (cohort size, batch counts and
    sizes are left open in its input signature). Under XLA, the step loop is
    traced and compiled once per padded shape: the client, batch and
    batch-size axes are padded to the largest seen so far (batches to a power
    of two unless the cohort's clients all have the same count; see
    ``_batches_to``), so a run compiles a handful of times, not every round.
    """

    def __init__(self, client_work: Any, xla: Optional[bool] = None, max_chunk: int = 32):
        if isinstance(max_chunk, bool) or not isinstance(max_chunk, int) or max_chunk < 1:
            raise ValueError(f"max_chunk={max_chunk!r} must be a positive int (clients trained in one call)")
        self.max_chunk = max_chunk
        reason = cohort_blocker(client_work)
        if reason is not None:
            raise VectorizationError(f"cannot vectorize this client work: {reason}; use executor 'sequential'")
        self.step = KerasClientStep(client_work.model, client_work.task)
        # Start statistics run in the client loop (a graph), so they match the sequential pass exactly.
        self.xla = xla_blocker(client_work.model) is None if xla is None else bool(xla)
        changed = xla_result_blocker(client_work.model)
        if self.xla and changed is not None:
            raise VectorizationError(
                f"xla=True would not give the sequential executor's results: {changed}; leave xla unset "
                "(the graph client loop trains this model with the sequential results)")
        self.start_statistics = client_work.task.start_statistics
        self._statistics = tf.function(partial(start_statistics, self.step), reduce_retracing=True)
        self.trace_count = 0
        # Keys are dataset objects, held weakly: an entry lives as long as its dataset.
        self._read_cache: "weakref.WeakKeyDictionary[tf.data.Dataset, ClientTensors]" = weakref.WeakKeyDictionary()
        self._read_one = tf.function(client_tensors)
        # Datasets that are not static may change between reads (shuffles): read them once.
        self._read_all = tf.function(lambda datasets: [client_tensors(d, single_pass=True) for d in datasets])
        # Under XLA the step loop is traced per padded shape (its stages need
        # the client count), so it is called directly; the graph path is
        # traced once with an open input signature (see _run).
        self._xla_steps = tf.function(partial(self._traced, masked_steps), jit_compile=True)
        self._graph_steps = None
        self._padded = (0, 0, 0)  # clients, batches, batch size: the largest seen (XLA only)
        self._padded_lock = threading.Lock()

    def __call__(self, trainable, non_trainable, datasets, offsets=None, optimizer_state=(), rng=()):
        """Returns ``(delta, num_examples, metrics, non_trainable, statistics)`` as NumPy, leaves with a leading client axis.

        ``non_trainable`` has one ``[clients, ...]`` array per non-trainable
        weight (each client's start; ``cohort_non_trainable``), and so has the
        result's ``non_trainable`` (each client's values after training).
        ``offsets`` (one ``[clients, ...]`` array per trainable weight),
        ``optimizer_state`` and ``rng`` (one ``[clients, ...]`` array per
        random-generator state) are the clients' inputs (see ``cohort_steps``);
        ``statistics`` is ``(start loss, start gradient)`` when the task asks
        for them, else ``()``.

        Cohorts of more than ``max_chunk`` clients train in equal chunks of
        similar lengths (longest first), one compiled call each: the chunks
        share one padded shape, and a chunk's state stays in cache, where a
        100-client state (20 MB for the benchmark's MLP) would not.
        """
        clients = self.read(datasets)
        offsets = [np.asarray(o) for o in offsets] if offsets is not None else []
        rng = [np.asarray(r) for r in rng]
        non_trainable = [np.asarray(n) for n in non_trainable]
        batches_to = self._batches_to(clients)
        if len(clients) <= self.max_chunk:
            results = self._train_chunk(trainable, non_trainable, clients, offsets, optimizer_state, rng, batches_to)
            return keras.tree.map_structure(np.array, results)  # writable arrays of their own
        order = sorted(range(len(clients)), key=lambda c: -clients[c].mask.shape[0])
        chunks = np.array_split(np.array(order), -(-len(clients) // self.max_chunk))
        parts = [
            self._train_chunk(trainable, [n[chunk] for n in non_trainable], [clients[c] for c in chunk],
                              [o[chunk] for o in offsets], optimizer_state, [r[chunk] for r in rng], batches_to)
            for chunk in chunks
        ]
        return keras.tree.map_structure(partial(_in_cohort_order, chunks), *parts)

    def _train_chunk(self, trainable, non_trainable, clients, offsets, optimizer_state, rng, batches_to):
        """One compiled call's results, as read-only NumPy views of its output tensors."""
        results = self._run(self.xla, trainable, non_trainable, clients, offsets, optimizer_state, rng, batches_to)
        if self.xla and not all(np.isfinite(d).all() for d in results[0]):
            # XLA raises nothing on invalid input (an out-of-range label gives
            # NaN where the graph kernel raises), so a non-finite cohort is
            # rerun as a graph: it raises what the sequential executor raises,
            # or gives the same non-finite values (a diverged client).
            results = self._run(False, trainable, non_trainable, clients, offsets, optimizer_state, rng, batches_to)
        return results

    def _run(self, xla: bool, trainable, non_trainable, clients, offsets, optimizer_state, rng, batches_to):
        padded = self._padded_shape(clients, batches_to) if xla else ()
        data = stack_clients(clients, *padded)
        padding = data.mask.shape[0] - len(clients)  # XLA pads the cohort: padding clients get zero offsets
        offsets, non_trainable = ([_pad(a, padding) for a in arrays] for arrays in (offsets, non_trainable))
        # The tensors share the stacked arrays' memory (no copy; see stack_clients).
        x, y, mask = tf.nest.map_structure(as_tensor, (data.x, data.y, data.mask))
        args = (list(trainable), non_trainable, x, y, mask, data.num_batches, offsets, optimizer_state, rng)
        if xla:
            results = self._xla_steps(*args)
        else:
            if self._graph_steps is None:
                # Client, batch and batch-size axes open: one trace serves every cohort.
                weights = ([tf.TensorSpec.from_tensor(w) for w in args[0]],
                           [tf.TensorSpec((None,) + n.shape[1:], tf.as_dtype(n.dtype)) for n in args[1]])
                data_specs = tf.nest.map_structure(
                    lambda a: tf.TensorSpec((None,) * min(a.ndim, 3) + tuple(a.shape[3:]), tf.as_dtype(a.dtype)),
                    args[2:6])
                offset_specs = [tf.TensorSpec((None,) + o.shape[1:], tf.as_dtype(o.dtype)) for o in offsets]
                state_specs = tf.nest.map_structure(lambda a: tf.TensorSpec.from_tensor(tf.convert_to_tensor(a)),
                                                    optimizer_state)
                rng_specs = [tf.TensorSpec((None,) + r.shape[1:], tf.as_dtype(r.dtype)) for r in rng]
                self._graph_steps = tf.function(partial(self._traced, client_loop_steps),
                                                input_signature=(*weights, *data_specs, offset_specs, state_specs,
                                                                 rng_specs))
            results = self._graph_steps(*args)
        statistics = self._statistics(*args[:6], rng) if self.start_statistics else ()
        # Views, not copies (``np.asarray``; ``.numpy()`` copies), without the
        # padding clients (XLA path): slicing in NumPy costs microseconds, an
        # eager slice per result leaf ~0.1 ms. ``__call__`` copies them once.
        # keras.tree (optree) on the results, fedsim's own lists, tuples and dicts: 8-15 us a call
        # against 100-150 us for tf.nest, 0.3-0.5 ms of a 5.5 ms logreg round.
        return keras.tree.map_structure(lambda t: np.asarray(t)[:len(clients)], (*results, statistics))

    @property
    def padded(self) -> tuple[int, int, int]:
        """XLA path: the (clients, batches, batch size) every cohort is padded to (the largest so far)."""
        return self._padded

    @staticmethod
    def _batches_to(clients: Sequence[ClientTensors]) -> int:
        """XLA path: the batch count a cohort asks to be padded to (before the largest-so-far rule).

        The longest client's count, rounded up to a power of two so that a
        ragged population compiles for a few counts only; not rounded when
        every client of a cohort (of two or more) has the same count: such a
        population asks for one count every round (logreg, 1,000 clients of
        10 batches: rounding to 16 made the stacked arrays and the steps 1.6x).
        """
        counts = {c.mask.shape[0] for c in clients}
        longest = max(counts)
        return longest if len(counts) == 1 and len(clients) > 1 else _next_power_of_two(longest)

    def _padded_shape(self, clients: Sequence[ClientTensors], batches_to: int) -> tuple[int, int, int]:
        wanted = (len(clients), batches_to, max(c.mask.shape[1] for c in clients))
        with self._padded_lock:  # the multi-device executor calls from several threads
            padded = self._padded = tuple(max(a, b) for a, b in zip(self._padded, wanted))
        return padded

    def read(self, datasets: Sequence[tf.data.Dataset]) -> list[ClientTensors]:
        """Each dataset's batches as padded NumPy arrays, from the cache when the dataset is static."""
        if not all(is_static(d) for d in datasets):
            return [c.as_numpy() for c in self._read_all(list(datasets))]  # one call for the whole cohort
        clients = []
        for dataset in datasets:
            cached = self._read_cache.get(dataset)
            if cached is None:
                cached = array_client_tensors(dataset) or self._read_one(dataset).as_numpy()
                self._read_cache[dataset] = cached
            clients.append(cached)
        return clients

    def _traced(self, steps, *args):
        self.trace_count += 1  # runs once per trace
        return steps(self.step, *args)


class VectorizedExecutor:
    """Trains a cohort of a Keras model as one batched computation (see module docstring).

    Evaluation runs client by client with the client work (it is not on the
    round's critical path).

    Args:
      client_work: the client work to run.
      xla: see ``CohortTrainer`` (default: XLA for models without convolutions).
      max_chunk: see ``CohortTrainer`` (default 32 clients per compiled call).

    Raises:
      VectorizationError: for client work it cannot run (the message says why);
        ``make_executor("auto", ...)`` falls back to sequential instead.
    """

    name = "vectorized"

    def __init__(self, client_work: Any, xla: Optional[bool] = None, max_chunk: int = 32):
        self.client_work = client_work
        self.trainer = CohortTrainer(client_work, xla=xla, max_chunk=max_chunk)
        self._sequential = SequentialExecutor(client_work)

    def train(
        self,
        model_weights: Any,
        datasets: Sequence[tf.data.Dataset],
        inputs: Optional[Sequence[Any]] = None,
        client_ids: Optional[Sequence[Any]] = None,
    ) -> list:
        """Per client, in order, its ``ClientOutput`` or a ``ClientFailure``."""
        inputs, client_ids = with_defaults(datasets, inputs, client_ids)
        trainable = _tensors(model_weights.trainable)

        def train_cohort(cohort, cohort_inputs):
            offsets, optimizer_state = cohort_inputs_as_arrays(self.client_work.task, cohort_inputs)
            rng = cohort_rng_states(self.client_work, cohort_inputs)
            non_trainable = cohort_non_trainable(model_weights, cohort_inputs)
            results = self.trainer(trainable, non_trainable, cohort, offsets, optimizer_state, rng)
            return client_outputs(self.client_work, results)

        return isolate_failures(train_cohort, datasets, inputs, client_ids)

    def evaluate(self, model_weights: Any, datasets: Sequence[tf.data.Dataset]) -> list:
        return self._sequential.evaluate(model_weights, datasets)


def _in_cohort_order(chunks: Sequence[np.ndarray], *parts: np.ndarray) -> np.ndarray:
    """One result leaf of the whole cohort from its chunks' parts (``parts[i][j]`` is client ``chunks[i][j]``).

    One scatter into a new array: concatenating then indexing copied the
    cohort's deltas twice (1,000 x 54k float32: 0.31 s of a 2.2 s round).
    """
    first = parts[0]
    out = np.empty((sum(len(p) for p in parts),) + first.shape[1:], first.dtype)
    for chunk, part in zip(chunks, parts):
        out[chunk] = part
    return out


def _pad(array: np.ndarray, padding: int) -> np.ndarray:
    """``array`` with ``padding`` rows of zeros after its clients (the padding clients of an XLA cohort)."""
    return np.concatenate([array, np.zeros((padding,) + array.shape[1:], array.dtype)]) if padding else array


def _tensors(arrays) -> list[tf.Tensor]:
    return [tf.convert_to_tensor(a) for a in arrays]
