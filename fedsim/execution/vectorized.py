"""The vectorized executor: a whole cohort trains as one batched, compiled computation.

For small models, a round costs per-client overhead (one graph call, a dataset
iterator and a few dozen tiny kernels per batch per client), not arithmetic.
Here each client's batches are read into padded tensors (once, for static
datasets), and one ``tf.function`` runs local step ``k`` of all clients
together under ``tf.vectorized_map``.

Ragged cohorts: clients are sorted by their number of batches, longest first,
so at step ``k`` the clients that still train are a prefix of the cohort; only
that prefix is computed, and the others keep their weights. Padded examples in
a client's last (short) batch are masked (see ``keras_step``). Results are the
sequential executor's to float rounding.
"""
from __future__ import annotations

import weakref
from typing import Any, Sequence

import tensorflow as tf

from fedsim.execution.cohort_data import ClientTensors, client_tensors, is_static, relaxed_spec, stack_clients
from fedsim.execution.keras_step import KerasClientStep, vectorization_blocker
from fedsim.execution.sequential import SequentialExecutor


class VectorizationError(ValueError):
    """Raised when a client work cannot be vectorized; the message says why."""


def cohort_blocker(client_work: Any):
    """Why ``client_work`` cannot train as a batched cohort, or ``None``."""
    if getattr(client_work, "proximal_mu", 0.0) or getattr(client_work, "freeze_optimizer_state", False):
        return "the client work has a proximal term or a frozen optimizer state (not vectorized yet)"
    return vectorization_blocker(client_work)


class CohortTrainer:
    """The compiled cohort computation: ``(weights, datasets) -> per-client results``.

    Holds no model state (no variables), so one instance can run on several
    devices at once. Each client's dataset is read into padded tensors by one
    compiled function; a static dataset (see ``cohort_data.is_static``) is read
    once and kept while the dataset object lives, so a population that hands
    out the same dataset objects every round is read once per client, not once
    per round. Training is traced once per cohort size.
    """

    def __init__(self, client_work: Any):
        reason = cohort_blocker(client_work)
        if reason is not None:
            raise VectorizationError(f"cannot vectorize this client work: {reason}; use executor 'sequential'")
        self.step = KerasClientStep(client_work.model, client_work.optimizer)
        self.trace_count = 0
        # Keys are dataset objects, held weakly: an entry lives as long as its dataset.
        self._read_cache: "weakref.WeakKeyDictionary[tf.data.Dataset, ClientTensors]" = weakref.WeakKeyDictionary()
        self._read_one = tf.function(client_tensors)
        self._read_all = tf.function(lambda datasets: [client_tensors(d) for d in datasets])
        self._train = tf.function(self._train_graph)
        self._by_cohort_size: dict = {}

    def __call__(self, trainable, non_trainable, datasets):
        """Returns ``(delta, num_examples, metrics)``, each leaf with a leading client axis."""
        clients = self.read(datasets)
        size = len(clients)
        if size not in self._by_cohort_size:
            # Open batch counts and sizes: one trace serves every ragged cohort of this size.
            self._by_cohort_size[size] = self._train.get_concrete_function(
                [tf.TensorSpec.from_tensor(t) for t in trainable],
                [tf.TensorSpec.from_tensor(t) for t in non_trainable],
                [relaxed_spec(clients[0])] * size,
            )
        return self._by_cohort_size[size](trainable, non_trainable, clients)

    def read(self, datasets: Sequence[tf.data.Dataset]) -> list[ClientTensors]:
        """Each dataset's batches as padded tensors, from the cache when the dataset is static."""
        if not all(is_static(d) for d in datasets):
            return self._read_all(list(datasets))  # one call for the whole cohort
        clients = []
        for dataset in datasets:
            cached = self._read_cache.get(dataset)
            if cached is None:
                cached = self._read_cache[dataset] = self._read_one(dataset)
            clients.append(cached)
        return clients

    def _train_graph(self, trainable, non_trainable, clients):
        self.trace_count += 1  # runs once per trace
        data = stack_clients(clients)
        # Longest clients first: the clients still training at step k are a prefix.
        order = tf.argsort(data.num_batches, direction="DESCENDING", stable=True)
        x, y, mask = (tf.nest.map_structure(lambda t: tf.gather(t, order), v) for v in (data.x, data.y, data.mask))
        num_batches = tf.cast(tf.gather(data.num_batches, order), tf.int32)
        clients = tf.shape(mask)[0]

        def per_client(value):
            return tf.tile(value[tf.newaxis], tf.concat([[clients], tf.ones_like(tf.shape(value))], 0))

        # Every client starts from the same weights, so the optimizer state
        # built from them is the same too: build it once and copy it per client.
        state = (
            [per_client(w) for w in trainable],
            [per_client(w) for w in non_trainable],
            tf.nest.map_structure(per_client, self.step.optimizer.init(list(trainable))),
            tf.nest.map_structure(per_client, self.step.initial_metric_state()),
        )

        def body(k, state):
            active = tf.reduce_sum(tf.cast(num_batches > k, tf.int32))
            # pfor mis-broadcasts some converted ops (conv BiasAdd) when the loop
            # has one iteration, so compute at least two rows; the extra row
            # (a finished client on an all-padding batch) is discarded.
            width = tf.minimum(tf.maximum(active, 2), clients)
            head = tf.nest.map_structure(lambda t: t[:width], state)
            batch = tf.nest.map_structure(lambda t: t[:width, k], (x, y, mask))
            new_head = tf.vectorized_map(lambda args: self.step(*args[0], *args[1]), (head, batch))
            # Clients past their last batch keep their values unchanged.
            merged = tf.nest.map_structure(
                lambda new, old: tf.ensure_shape(tf.concat([new[:active], old[active:]], 0), old.shape),
                new_head, state,
            )
            return k + 1, merged

        _, state = tf.while_loop(
            lambda k, _: k < tf.reduce_max(tf.concat([num_batches, [0]], 0)),
            body,
            (tf.constant(0, tf.int32), state),
            parallel_iterations=1,
        )
        final, _, _, metrics = state
        restore = tf.argsort(order)  # back to cohort order
        delta = [tf.gather(w, restore) - w0[tf.newaxis] for w, w0 in zip(final, trainable)]
        metrics = tf.nest.map_structure(lambda t: tf.gather(t, restore), metrics)
        return delta, metrics["num_examples"][0], metrics


class VectorizedExecutor:
    """Trains a cohort of a Keras model as one batched computation (see module docstring).

    Evaluation runs client by client with the client work (it is not on the
    round's critical path).

    Raises:
      VectorizationError: for client work it cannot run (the message says why);
        ``make_executor("auto", ...)`` falls back to sequential instead.
    """

    name = "vectorized"

    def __init__(self, client_work: Any):
        self.client_work = client_work
        self.trainer = CohortTrainer(client_work)
        self._sequential = SequentialExecutor(client_work)

    def train(self, model_weights: Any, datasets: Sequence[tf.data.Dataset]) -> list:
        results = self.trainer(_tensors(model_weights.trainable), _tensors(model_weights.non_trainable), datasets)
        return client_outputs(self.client_work, results)

    def evaluate(self, model_weights: Any, datasets: Sequence[tf.data.Dataset]) -> list:
        return self._sequential.evaluate(model_weights, datasets)


def _tensors(arrays) -> list[tf.Tensor]:
    return [tf.convert_to_tensor(a) for a in arrays]


def client_outputs(client_work: Any, results) -> list:
    """Splits a cohort's stacked results into one ``ClientOutput`` per client."""
    from fedsim.learning.client_work import ClientOutput  # the learning package imports executors

    delta, num_examples, metrics = results
    # One device-to-host copy per leaf for the whole cohort, then NumPy slicing.
    delta = [d.numpy() for d in delta]
    num_examples = num_examples.numpy()
    metrics = tf.nest.map_structure(lambda t: t.numpy(), metrics)
    outputs = []
    for c, count in enumerate(num_examples.tolist()):
        # The update-weight rule of ClientWork.train.
        weight = float(count) if client_work.weighted else (1.0 if count > 0 else 0.0)
        client_metrics = type(metrics)((k, [v[c] for v in vs]) for k, vs in metrics.items())
        outputs.append(ClientOutput(
            delta=[d[c] for d in delta], update_weight=weight, metrics=client_metrics,
            num_examples=int(count), num_steps=int(client_metrics["num_batches"][0]),
        ))
    return outputs
