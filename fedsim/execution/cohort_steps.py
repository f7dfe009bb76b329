"""The cohort's local-step loop, two ways: over the active prefix, or over every client.

Both run local step ``k`` of all clients together under ``tf.vectorized_map``
and give the same results (the sequential executor's, to float rounding):

- ``prefix_steps``: clients sorted longest first, so the clients still training
  at step ``k`` are a prefix; only that prefix is computed. Shapes depend on
  the data (``t[:width]``), so it runs as a plain graph, not under XLA. Best
  when a step is expensive (convolutions), since finished clients cost nothing.
- ``masked_steps``: a fixed number of clients computes each step and finished
  clients keep their values through ``tf.where``; the width halves in stages
  as clients finish (at most 2x the rows still training). Every shape is
  static, so it compiles with XLA (``jit_compile=True``), which fuses the
  loop's many tiny ops; for small dense models that wins far more than the
  wasted rows cost.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf


def initial_state(step: Any, trainable, non_trainable, clients: tf.Tensor):
    """(weights, non-trainable, optimizer state, metric state), each with a leading client axis."""

    def per_client(value):
        return tf.tile(value[tf.newaxis], tf.concat([[clients], tf.ones_like(tf.shape(value))], 0))

    # Every client starts from the same weights, so the optimizer state built
    # from them is the same too: build it once and copy it per client.
    return (
        [per_client(w) for w in trainable],
        [per_client(w) for w in non_trainable],
        tf.nest.map_structure(per_client, step.optimizer.init(list(trainable))),
        tf.nest.map_structure(per_client, step.initial_metric_state()),
    )


def _results(trainable, state, order=None):
    final, _, _, metrics = state
    if order is not None:  # back to cohort order (only what is returned)
        final, metrics = tf.nest.map_structure(lambda t: tf.gather(t, order), (final, metrics))
    delta = [w - w0[tf.newaxis] for w, w0 in zip(final, trainable)]
    return delta, metrics["num_examples"][0], metrics


def stage_widths(clients: int) -> list[int]:
    """The client counts of ``masked_steps``'s stages: ``clients``, then halving down to 2 (or 1)."""
    widths = [clients]
    while widths[-1] > 2:
        widths.append(-(-widths[-1] // 2))
    return widths


def masked_steps(step: Any, trainable, non_trainable, x, y, mask, num_batches):
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
    clients = int(mask.shape[0])  # static under XLA: padded cohorts compile once per shape
    order = tf.argsort(num_batches, direction="DESCENDING", stable=True)
    x, y, mask = (tf.nest.map_structure(lambda t: tf.gather(t, order), v) for v in (x, y, mask))
    num_batches = tf.gather(num_batches, order)
    state = initial_state(step, trainable, non_trainable, clients)
    widths = stage_widths(clients)
    k = tf.constant(0, tf.int32)
    for stage, width in enumerate(widths):
        # Sorted counts: once k reaches the count of client ``next_width``, at
        # most ``next_width`` clients still train (the last stage runs to the longest).
        next_width = widths[stage + 1] if stage + 1 < len(widths) else 0
        end = num_batches[next_width] if next_width else num_batches[0]
        k, head = _masked_stage(step, state, x, y, mask, num_batches, k, end, width)
        state = tf.nest.map_structure(lambda new, old: tf.concat([new, old[width:]], 0), head, state)
    return _results(trainable, state, order=tf.argsort(order))


def _masked_stage(step, state, x, y, mask, num_batches, k, end, width):
    """Steps ``k .. end-1`` of the first ``width`` clients; returns ``(end, their new state)``."""
    head = tf.nest.map_structure(lambda t: t[:width], state)
    counts = num_batches[:width]

    def body(k, head):
        batch = tf.nest.map_structure(lambda t: t[:width, k], (x, y, mask))
        new = tf.vectorized_map(lambda args: step(*args[0], *args[1]), (head, batch))
        active = counts > k

        def select(new_value, old_value):
            # A finished client's row was computed on an all-padding batch: discard it.
            # (Its loss divides by a zero count via divide_no_nan, so no NaN either.)
            shape = tf.concat([[width], tf.ones([tf.rank(old_value) - 1], tf.int32)], 0)
            # pfor forgets the static client axis when it has one row: restore it.
            return tf.where(tf.reshape(active, shape), tf.ensure_shape(new_value, old_value.shape), old_value)

        return k + 1, tf.nest.map_structure(select, new, head)

    return tf.while_loop(lambda k, _: k < end, body, (k, head))


def prefix_steps(step: Any, trainable, non_trainable, x, y, mask, num_batches):
    """Only the clients still training, longest first (see module docstring); same contract as ``masked_steps``."""
    order = tf.argsort(num_batches, direction="DESCENDING", stable=True)
    x, y, mask = (tf.nest.map_structure(lambda t: tf.gather(t, order), v) for v in (x, y, mask))
    num_batches = tf.gather(num_batches, order)
    clients = tf.shape(mask)[0]
    state = initial_state(step, trainable, non_trainable, clients)

    def body(k, state):
        active = tf.reduce_sum(tf.cast(num_batches > k, tf.int32))
        # pfor mis-broadcasts some converted ops (conv BiasAdd) when the loop
        # has one iteration, so compute at least two rows; the extra row
        # (a finished client on an all-padding batch) is discarded.
        width = tf.minimum(tf.maximum(active, 2), clients)
        head = tf.nest.map_structure(lambda t: t[:width], state)
        batch = tf.nest.map_structure(lambda t: t[:width, k], (x, y, mask))
        new_head = tf.vectorized_map(lambda args: step(*args[0], *args[1]), (head, batch))

        def merged():
            # Clients past their last batch keep their values unchanged.
            return tf.nest.map_structure(
                lambda new, old: tf.ensure_shape(tf.concat([new[:active], old[active:]], 0), old.shape),
                new_head, state,
            )

        # While every client trains (every step of an equal cohort), the new
        # rows are the whole state: skip the merge, which copies every
        # client's weights and optimizer state (tens of MB per step for a CNN).
        def whole():
            return tf.nest.map_structure(lambda new, old: tf.ensure_shape(new, old.shape), new_head, state)

        return k + 1, tf.cond(active == clients, whole, merged)

    _, state = tf.while_loop(
        lambda k, _: k < tf.reduce_max(tf.concat([num_batches, [0]], 0)),
        body,
        (tf.constant(0, tf.int32), state),
        parallel_iterations=1,
    )
    return _results(trainable, state, order=tf.argsort(order))
