"""The cohort's local-step loop, two ways: batched over clients under XLA, or client by client in one graph.

Both give the sequential executor's results and the same contract:
``(step, trainable, non_trainable, x, y, mask, num_batches, offsets,
optimizer_state, rng) -> (delta, num_examples, metrics, non_trainable)``,
leaves with a leading client axis, in cohort order. ``non_trainable`` (in and
out) has one ``[clients, ...]`` tensor per non-trainable weight: each client
starts from its own row (the server's values, or its own under FedBN) and
returns its values after training (BatchNorm statistics). ``offsets`` (one ``[clients, ...]`` tensor per
trainable weight, or ``()``) are the clients' gradient offsets;
``optimizer_state`` (or ``()``) is the optimizer state the server sent, which
every client starts from instead of ``optimizer.init`` (see ``ClientInputs``);
``rng`` (one ``[clients, ...]`` tensor per random-generator state, or ``()``)
are the states each client's generators start from (``fedsim.client.seeds``).
``non_trainable`` holds model weights only; the step carries them joined
with the client's generator states (``KerasClientStep.start_non_trainable``).
``start_statistics`` gives each client's mean loss and gradient at the
starting weights, as ``ClientWork.loss_and_gradient`` computes them.

- ``masked_steps``: local step ``k`` of many clients at once under
  ``tf.vectorized_map``; finished clients keep their values through
  ``tf.where``, and the width halves in stages as clients finish (at most 2x
  the rows still training). Every shape is static, so it compiles with XLA
  (``jit_compile=True``), which fuses the loop's many tiny ops; for small
  dense models that wins far more than the wasted rows cost. Results match
  the sequential executor's to float rounding.
- ``client_loop_steps``: a graph ``while_loop`` over clients (two in flight,
  so both cores of a small machine stay busy) runs each client's own step
  loop of exactly its batches, on the very kernels and batch shapes the
  sequential executor uses, so results are bit for bit the same. Measured
  (benchmarks/RESULTS.md): for convolutions it beats ``vectorized_map``,
  under which pfor loops over clients for per-client filters anyway and the
  max-pool gradient loses oneDNN's fused kernel (a 3-round CNN run also
  drifted by ~1e-2 from sequential that way: a rounding difference flips a
  ReLU or max-pool choice, and the CNN amplifies it).
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from fedsim.execution import pfor_converters
from fedsim.runtime import CLIENTS_IN_FLIGHT

pfor_converters.register()


def start_optimizer_state(step: Any, trainable, optimizer_state):
    """The optimizer state every client starts from: the server's, or ``init`` of the weights."""
    return optimizer_state if tf.nest.flatten(optimizer_state) else step.optimizer.init(list(trainable))


def initial_state(step: Any, trainable, non_trainable, clients: tf.Tensor, optimizer_state=()):
    """(weights, non-trainable, optimizer state, metric state), each with a leading client axis.

    ``non_trainable`` already has one (the client's own start values).
    """

    def per_client(value):
        return tf.tile(value[tf.newaxis], tf.concat([[clients], tf.ones_like(tf.shape(value))], 0))

    # Every client starts from the same weights, so the optimizer state built
    # from them is the same too: build it once and copy it per client.
    return (
        [per_client(w) for w in trainable],
        step.start_non_trainable(non_trainable),  # no RNG states under XLA
        tf.nest.map_structure(per_client, start_optimizer_state(step, trainable, optimizer_state)),
        tf.nest.map_structure(per_client, step.initial_metric_state()),
    )


def _results(step, trainable, state, order=None):
    final, other, _, metrics = state
    non_trainable = step.model_non_trainable(other)
    if order is not None:  # back to cohort order (only what is returned)
        final, metrics, non_trainable = tf.nest.map_structure(
            lambda t: tf.gather(t, order), (final, metrics, non_trainable))
    delta = [w - w0[tf.newaxis] for w, w0 in zip(final, trainable)]
    return delta, metrics["num_examples"][0], metrics, non_trainable


def stage_widths(clients: int) -> list[int]:
    """The client counts of ``masked_steps``'s stages: ``clients``, then halving down to 2 (or 1)."""
    widths = [clients]
    while widths[-1] > 2:
        widths.append(-(-widths[-1] // 2))
    return widths


def masked_steps(step: Any, trainable, non_trainable, x, y, mask, num_batches, offsets=(), optimizer_state=(),
                 rng=()):
    """Every step of the longest clients, in stages of halving width (XLA-compilable; see module docstring).

    ``x``, ``y`` and ``mask`` have shape ``[clients, max_batches, batch_size, ...]``
    with a static client count; ``num_batches`` (int32 ``[clients]``) says how
    many batches each client has. Returns ``(delta, num_examples, metrics)``
    with a leading client axis, in the given client order.

    Clients are sorted longest first, so the ones still training are a prefix.
    Stage ``s`` computes the first ``stage_widths(C)[s]`` clients and lasts
    while more than the next stage's width still train; finished clients in a
    stage keep their values through ``tf.where``. No client is computed at
    more than twice the width that is training, so a ragged cohort costs at
    most twice its real steps, not ``clients x longest``.
    """
    if rng:
        # Padded batches would change the shape of every random draw (see xla_rules.xla_blocker).
        raise ValueError("masked_steps cannot train a model that draws random numbers; use client_loop_steps")
    clients = int(mask.shape[0])  # static under XLA: padded cohorts compile once per shape
    order = tf.argsort(num_batches, direction="DESCENDING", stable=True)
    x, y, mask, offsets, non_trainable = (
        tf.nest.map_structure(lambda t: tf.gather(t, order), v) for v in (x, y, mask, offsets, non_trainable))
    num_batches = tf.gather(num_batches, order)
    state = initial_state(step, trainable, non_trainable, clients, optimizer_state)
    widths = stage_widths(clients)
    k = tf.constant(0, tf.int32)
    for stage, width in enumerate(widths):
        # Sorted counts: once k reaches the count of client ``next_width``, at
        # most ``next_width`` clients still train (the last stage runs to the longest).
        next_width = widths[stage + 1] if stage + 1 < len(widths) else 0
        end = num_batches[next_width] if next_width else num_batches[0]
        k, head = _masked_stage(step, state, x, y, mask, num_batches, k, end, width, trainable, offsets)
        state = tf.nest.map_structure(lambda new, old: tf.concat([new, old[width:]], 0), head, state)
    return _results(step, trainable, state, order=tf.argsort(order))


def _masked_stage(step, state, x, y, mask, num_batches, k, end, width, trainable, offsets):
    """Steps ``k .. end-1`` of the first ``width`` clients; returns ``(end, their new state)``."""
    head = tf.nest.map_structure(lambda t: t[:width], state)
    counts = num_batches[:width]
    offsets = [o[:width] for o in offsets]

    def client_step(args):
        state, batch, offset = args
        return step(*state, *batch, start=trainable, offset=offset or None)

    def body(k, head):
        batch = tf.nest.map_structure(lambda t: t[:width, k], (x, y, mask))
        new = tf.vectorized_map(client_step, (head, batch, offsets))
        active = counts > k

        def select(new_value, old_value):
            # A finished client's row was computed on an all-padding batch: discard it.
            # (Its loss divides by a zero count via divide_no_nan, so no NaN either.)
            shape = tf.concat([[width], tf.ones([tf.rank(old_value) - 1], tf.int32)], 0)
            # pfor forgets the static client axis when it has one row: restore it.
            return tf.where(tf.reshape(active, shape), tf.ensure_shape(new_value, old_value.shape), old_value)

        return k + 1, tf.nest.map_structure(select, new, head)

    return tf.while_loop(lambda k, _: k < end, body, (k, head))


def real_batch(x, y, mask, c, k):
    """Client ``c``'s batch ``k`` without the padded rows after its last real example.

    The step then sees the batch the sequential executor sees, shape included,
    so the kernels sum the same numbers in the same order (padding would be
    masked anyway, but a different batch size changes float rounding, which a
    CNN can amplify, and batch statistics and random draws depend on it).
    """
    batch_mask = mask[c, k]
    rows = tf.shape(batch_mask)[0]
    real = tf.reduce_max(tf.cast(tf.not_equal(batch_mask, 0), tf.int32) * tf.range(1, rows + 1))
    real = tf.maximum(real, tf.minimum(rows, 1))
    return tf.nest.map_structure(lambda t: t[c, k, :real], (x, y, mask))


def start_statistics(step: Any, trainable, non_trainable, x, y, mask, num_batches, rng=()):
    """Each client's mean loss over its examples and its gradient, at the starting weights.

    As ``ClientWork.loss_and_gradient``: batch losses and gradients times the
    batch's example count, summed in float64 and divided once; the
    non-trainable state (random seeds, batch statistics) threads through the
    batches as in a stateful pass. Returns ``(loss [clients] float64, gradient)``.
    """
    trainable, non_trainable = list(trainable), list(non_trainable)
    num_batches = tf.cast(num_batches, tf.int32)
    clients = tf.shape(num_batches)[0]

    def client(c, losses, gradients):
        def batch_step(k, other, loss_sum, gradient_sum, count):
            xb, yb, mb = real_batch(x, y, mask, c, k)
            loss, gradient, other, _, real = step.loss_and_gradient(trainable, other, xb, yb, mb)
            size = tf.cast(real, tf.float64)
            gradient_sum = tuple(s + tf.cast(g, tf.float64) * size for s, g in zip(gradient_sum, gradient))
            return k + 1, other, loss_sum + tf.cast(loss, tf.float64) * size, gradient_sum, count + size

        zeros = tuple(tf.zeros(w.shape, tf.float64) for w in trainable)
        _, _, loss_sum, gradient_sum, count = tf.while_loop(
            lambda k, *_: k < num_batches[c], batch_step,
            (tf.constant(0, tf.int32), step.start_non_trainable([n[c] for n in non_trainable], [r[c] for r in rng]),
             tf.constant(0.0, tf.float64), zeros,
             tf.constant(0.0, tf.float64)))
        total = tf.maximum(count, 1.0)
        losses = losses.write(c, loss_sum / total)
        gradients = [a.write(c, tf.cast(s / total, w.dtype)) for a, s, w in zip(gradients, gradient_sum, trainable)]
        return c + 1, losses, gradients

    losses = tf.TensorArray(tf.float64, size=clients, element_shape=[])
    gradients = [tf.TensorArray(w.dtype, size=clients, element_shape=w.shape) for w in trainable]
    _, losses, gradients = tf.while_loop(
        lambda c, *_: c < clients, client, (tf.constant(0, tf.int32), losses, gradients))
    return losses.stack(), [g.stack() for g in gradients]


def client_loop_steps(step: Any, trainable, non_trainable, x, y, mask, num_batches, offsets=(),
                      optimizer_state=(), rng=(), parallel_clients: int = CLIENTS_IN_FLIGHT):
    """Trains every client of the cohort on its own batches; same contract as ``masked_steps``.

    Args:
      step: a ``KerasClientStep`` (or anything with its ``__call__``,
        ``optimizer.init`` and ``initial_metric_state``).
      trainable: the model's trainable weights (a list of tensors), the same start for every client.
      non_trainable: one ``[clients, ...]`` tensor per non-trainable weight, each client's start.
      x, y, mask: leaves shaped ``[clients, max_batches, batch_size, ...]``;
        client ``c``'s batches past ``num_batches[c]`` are never read.
      num_batches: int ``[clients]``, the number of batches of each client.
      offsets, optimizer_state, rng: see the module docstring.
      parallel_clients: how many clients train at the same time (the
        while_loop's ``parallel_iterations``); results do not depend on it.

    Returns:
      ``(delta, num_examples, metrics, non_trainable)``: ``delta`` a list with one
      ``[clients, ...]`` tensor per trainable weight (final minus start),
      ``num_examples`` int64 ``[clients]``, ``metrics`` the step's metric
      state and ``non_trainable`` the final non-trainable weights, with a
      leading client axis, all in cohort order.
    """
    trainable, non_trainable = list(trainable), list(non_trainable)
    num_batches = tf.cast(num_batches, tf.int32)
    clients = tf.shape(num_batches)[0]
    # Built once: every client starts from the same weights, so from the same optimizer state.
    optimizer_state = start_optimizer_state(step, trainable, optimizer_state)
    metric_state = step.initial_metric_state()
    # Longest first: with several clients in flight, the longest does not finish the round alone.
    order = tf.argsort(num_batches, direction="DESCENDING", stable=True)

    def train_client(i, deltas, metrics, finals):
        c = order[i]
        offset = [o[c] for o in offsets] or None

        def local_step(k, weights, other, opt, met):
            batch = real_batch(x, y, mask, c, k)
            weights, other, opt, met = step(weights, other, opt, met, *batch, start=trainable, offset=offset)
            return k + 1, list(weights), list(other), opt, met

        _, final, other, _, met = tf.while_loop(
            lambda k, *_: k < num_batches[c],
            local_step,
            (tf.constant(0, tf.int32), trainable,
             step.start_non_trainable([n[c] for n in non_trainable], [r[c] for r in rng]),
             optimizer_state, metric_state),
        )
        deltas = [d.write(c, w - w0) for d, w, w0 in zip(deltas, final, trainable)]
        metrics = tf.nest.map_structure(lambda a, v: a.write(c, v), metrics, met)
        finals = [a.write(c, v) for a, v in zip(finals, step.model_non_trainable(other))]
        return i + 1, deltas, metrics, finals

    # Written at index c (cohort order), so no gather is needed afterwards.
    deltas = [tf.TensorArray(w.dtype, size=clients, element_shape=w.shape) for w in trainable]
    metrics = tf.nest.map_structure(
        lambda v: tf.TensorArray(v.dtype, size=clients, element_shape=v.shape), metric_state)
    finals = [tf.TensorArray(n.dtype, size=clients, element_shape=n.shape[1:]) for n in non_trainable]
    _, deltas, metrics, finals = tf.while_loop(
        lambda i, *_: i < clients,
        train_client,
        (tf.constant(0, tf.int32), deltas, metrics, finals),
        parallel_iterations=parallel_clients,
    )
    delta = [d.stack() for d in deltas]
    metrics = tf.nest.map_structure(lambda a: a.stack(), metrics)
    return delta, metrics["num_examples"][0], metrics, [f.stack() for f in finals]
