"""Convolutions across clients: one local SGD step of a whole cohort, each client on its own weights, several ways.

Usage:
  python -m benchmarks.conv_cohort [--clients 10] [--batch 20] [--repeats 15]

The workload CNN of ``benchmarks.fedavg`` (kind "cnn": two 5x5 conv layers,
max-pooling, Dense 512, 62 classes; 28x28 inputs; SGD 0.05). Every client
takes local step k: forward, loss, every weight gradient and the SGD update,
from its own weights (the server's plus a little per-client noise) on its own
batch of the workload's data. One call trains the whole cohort; the ways:

- ``client_loop``: today's way. A graph ``while_loop`` over clients,
  ``CLIENTS_IN_FLIGHT`` at a time, each client its own conv2d calls (the
  kernels ``cohort_steps.client_loop_steps`` runs), in plain TF ops.
- ``client_loop_xla``: the same loop, each client's step compiled with XLA.
- ``fedsim_client_loop``: ``cohort_steps.client_loop_steps`` itself, one
  batch per client, through ``KerasClientStep`` (Keras's stateless call,
  masked loss, metrics): checks that ``client_loop`` stands for fedsim.
- ``grouped``: clients stacked on the channel axis, every conv one grouped
  conv2d (``groups = clients``, which TF's CPU kernels accept, forward and
  backward), Dense layers as batched matmuls; the cohort split in
  ``CLIENTS_IN_FLIGHT`` parts trained side by side (one thread per op).
- ``grouped_xla``: the same, each part compiled with XLA.
- ``im2col``: ``tf.image.extract_patches`` for all clients at once, then each
  conv a matmul with a client batch axis; its gradients too (filter gradient
  ``patches^T dy``, input gradient the patches of ``dy`` times the flipped
  filters), side by side in parts.
- ``shared_conv``: not a cohort way but a bound: the convs as at a round's
  first step, when every client holds the server's weights, so each conv is
  one conv2d over a part's examples (the Dense layers stay per client). No
  batching of the clients' convolutions can beat it by much.
- ``shared_weights``: the whole model shared (as ``shared_conv``, Dense too):
  the cohort's examples through one model, like the one-model Keras loop.

Each way is timed beside a ``client_loop`` call, ``--repeats`` pairs; each
reports its median ms per cohort step, its median ratio to the adjacent
``client_loop`` call and GFLOP/s (FLOPs counted as ``benchmarks.floor`` counts
them), beside the matmul peak ``benchmarks.floor`` measures. Each way's new
weights are checked against ``client_loop``'s (max abs difference).

Then one client's step op by op: each big op alone (one thread, nothing
beside it), ms and GFLOP/s against one op's share of the matmul peak, and
what the rest of the step costs. Prints one JSON line per way and per op,
then two Markdown tables.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from functools import partial
from itertools import pairwise

from fedsim import runtime  # first: fedsim's thread default (one thread per op here) applies

import keras
import numpy as np
import tensorflow as tf

import fedsim
from benchmarks.fedavg import DEFAULT_WORKLOAD, load_workload, workload_model_fn
from benchmarks.floor import intra_op_threads, matmul_peak, step_flops
from fedsim.client import ClientWork
from fedsim.client.keras_step import KerasClientStep
from fedsim.execution.cohort_steps import client_loop_steps

LEARNING_RATE = 0.05  # benchmarks.fedavg's client SGD
CLIENT_NOISE = 1e-3  # relative per-client perturbation: every client holds its own weights at step k
PARTS = runtime.CLIENTS_IN_FLIGHT  # ops side by side, one thread each


# --- the workload -----------------------------------------------------------------------------------------

def workload_cohort(clients: int, batch: int, seed: int = 0):
    """``(keras model, per-client weights [clients, ...] per weight, x [clients, batch, 28, 28, 1], y)``."""
    shared = load_workload(DEFAULT_WORKLOAD)
    keras.utils.set_random_seed(0)  # benchmarks.fedavg's initial weights
    model = shared.build_model(keras, "cnn")
    data = shared.make_clients(num_clients=clients, kind="cnn")
    rng = np.random.default_rng(seed)
    # + 1e-2: the zero-initialized biases differ between clients too.
    weights = [np.stack([w + CLIENT_NOISE * (np.std(w) + 1e-2) * rng.standard_normal(w.shape).astype(w.dtype)
                         for _ in range(clients)]) for w in model.get_weights()]
    x = np.stack([cx[:batch] for cx, _ in data])
    y = np.stack([cy[:batch] for _, cy in data])
    return model, [tf.constant(w) for w in weights], tf.constant(x), tf.constant(y)


def sgd(weights, gradients):
    return [w - LEARNING_RATE * g for w, g in zip(weights, gradients)]


def client_losses(logits, y):
    """Each client's mean cross-entropy over its batch: ``logits [clients, batch, classes]`` -> ``[clients]``."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits), axis=-1)


def pool(h):
    return tf.nn.max_pool2d(h, 2, 2, "SAME")


# --- today's way: one client at a time ------------------------------------------------------------------

def client_forward(weights, x):
    """One client's logits: the workload CNN in plain TF ops (Keras's kernels)."""
    k1, b1, k2, b2, k3, b3, k4, b4 = weights
    h = pool(tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, k1, 1, "SAME"), b1)))
    h = pool(tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, k2, 1, "SAME"), b2)))
    h = tf.nn.relu(tf.reshape(h, [tf.shape(h)[0], -1]) @ k3 + b3)
    return h @ k4 + b4


def client_step(weights, x, y):
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, client_forward(weights, x)))
    return sgd(weights, tape.gradient(loss, weights))


def client_loop(weights, x, y, step=client_step):
    """Every client's ``step`` in a graph ``while_loop``, ``PARTS`` clients in flight (as ``client_loop_steps``)."""
    clients = tf.shape(x)[0]

    def body(c, arrays):
        new = step([w[c] for w in weights], x[c], y[c])
        return c + 1, [a.write(c, w) for a, w in zip(arrays, new)]

    arrays = [tf.TensorArray(w.dtype, size=clients, element_shape=w.shape[1:]) for w in weights]
    _, arrays = tf.while_loop(lambda c, _: c < clients, body, (0, arrays), parallel_iterations=PARTS)
    return [a.stack() for a in arrays]


# --- the cohort in one computation: layouts -------------------------------------------------------------

def in_parts(cohort_step, weights, x, y):
    """``cohort_step`` on ``PARTS`` slices of the client axis; independent subgraphs run side by side."""
    clients = x.shape[0]
    bounds = np.linspace(0, clients, PARTS + 1).astype(int)
    parts = [cohort_step([w[a:b] for w in weights], x[a:b], y[a:b]) for a, b in pairwise(bounds)]
    return [tf.concat(leaves, 0) for leaves in zip(*parts)]


def cohort_step(forward, weights, x, y):
    """One SGD step of every client: the sum of the clients' losses has each client's gradient in its weights."""
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = tf.reduce_sum(client_losses(forward(weights, x), y))
    return sgd(weights, tape.gradient(loss, weights))


def dense_head(weights, features):
    """The Dense layers of every client: ``features [clients, batch, 3136]`` -> logits, batched matmuls."""
    k3, b3, k4, b4 = weights
    h = tf.nn.relu(features @ k3 + b3[:, tf.newaxis])
    return h @ k4 + b4[:, tf.newaxis]


def grouped_forward(weights, x):
    """Clients on the channel axis (``[batch, H, W, clients * channels]``): each conv one grouped conv2d."""
    clients, batch = x.shape[0], x.shape[1]
    h = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [batch, *x.shape[2:4], -1])
    for kernel, bias in (weights[0:2], weights[2:4]):
        # [clients, kh, kw, in, out] -> [kh, kw, in, clients * out]: group c's outputs read group c's inputs.
        stacked = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [*kernel.shape[1:4], -1])
        h = pool(tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, stacked, 1, "SAME"), tf.reshape(bias, [-1]))))
    features = tf.transpose(tf.reshape(h, [batch, *h.shape[1:3], clients, -1]), [3, 0, 1, 2, 4])
    return dense_head(weights[4:], tf.reshape(features, [clients, batch, -1]))


def patches(h, size):
    """``[n, H, W, c]`` -> ``[n, H, W, size * size * c]`` (same padding, stride 1), ordered as an HWIO kernel."""
    return tf.image.extract_patches(h, [1, size, size, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")


def im2col_conv(h, kernel, clients: int, input_gradient: bool):
    """Same-padding stride-1 conv of ``h [clients * batch, H, W, in]`` with ``kernel [clients, k, k, in, out]``.

    A matmul per client over its examples' patches, with a hand-written
    gradient (TensorFlow's own gradient of ``extract_patches`` goes through a
    sparse matrix of patch indices). For an odd square kernel, the input gradient is the same-padded
    correlation of ``dy`` with the kernel flipped in space, in and out swapped.
    """
    size, out = kernel.shape[1], kernel.shape[-1]

    @tf.custom_gradient
    def conv(h, kernel):
        columns = tf.reshape(patches(h, size), [clients, -1, size * size * h.shape[-1]])
        y = columns @ tf.reshape(kernel, [clients, -1, out])
        output_shape = [-1, *h.shape[1:3], out]

        def gradient(dy):
            dy_columns = tf.reshape(dy, [clients, -1, out])
            d_kernel = tf.reshape(tf.matmul(columns, dy_columns, transpose_a=True), tf.shape(kernel))
            if not input_gradient:
                return None, d_kernel
            flipped = tf.transpose(tf.reverse(kernel, [1, 2]), [0, 1, 2, 4, 3])
            dy_patches = tf.reshape(patches(dy, size), [clients, -1, size * size * out])
            dh = dy_patches @ tf.reshape(flipped, [clients, -1, h.shape[-1]])
            return tf.reshape(dh, tf.shape(h)), d_kernel

        return tf.reshape(y, output_shape), gradient

    return conv(h, kernel)


def im2col_forward(weights, x):
    """Clients on the batch axis (``[clients * batch, H, W, channels]``), each conv a client-batched matmul."""
    clients, batch = x.shape[0], x.shape[1]
    h = tf.reshape(x, [-1, *x.shape[2:]])
    for layer, (kernel, bias) in enumerate((weights[0:2], weights[2:4])):
        h = im2col_conv(h, kernel, clients, input_gradient=layer > 0)
        h = tf.reshape(h, [clients, batch, *h.shape[1:]]) + bias[:, tf.newaxis, tf.newaxis, tf.newaxis]
        h = pool(tf.nn.relu(tf.reshape(h, [clients * batch, *h.shape[2:]])))
    return dense_head(weights[4:], tf.reshape(h, [clients, batch, -1]))


def shared_conv_forward(weights, x):
    """The bound for batching convolutions: client 0's conv weights for all examples, one conv2d per layer.

    Only at a round's first step do the clients share weights; each conv's
    filter gradient then sums over the clients (one row of the kernel
    gradient), so this is a cost bound, not a cohort step. Dense layers per client.
    """
    clients, batch = x.shape[0], x.shape[1]
    h = tf.reshape(x, [-1, *x.shape[2:]])
    for kernel, bias in (weights[0:2], weights[2:4]):
        h = pool(tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, kernel[0], 1, "SAME"), bias[0])))
    return dense_head(weights[4:], tf.reshape(h, [clients, batch, -1]))


def shared_weights_step(weights, x, y):
    """The bound: client 0's weights for the whole cohort's examples, in ``PARTS`` parts side by side."""
    examples = tf.reshape(x, [-1, *x.shape[2:]])
    labels = tf.reshape(y, [-1])
    bounds = np.linspace(0, examples.shape[0], PARTS + 1).astype(int)
    single = [w[0] for w in weights]
    parts = [client_step(single, examples[a:b], labels[a:b]) for a, b in pairwise(bounds)]
    return [tf.stack(leaves) for leaves in zip(*parts)]


# --- fedsim itself --------------------------------------------------------------------------------------

def fedsim_client_loop(model_fn, clients: int, batch: int):
    """``client_loop_steps`` with fedsim's Keras step, one batch per client, from one start (as at step 0)."""
    model = model_fn()
    step = KerasClientStep(model, ClientWork(model, fedsim.SGD(LEARNING_RATE)).task)
    steps = tf.function(partial(client_loop_steps, step))
    trainable = [tf.constant(v.numpy()) for v in model.trainable_variables]
    mask = tf.ones([clients, 1, batch])
    counts = tf.ones([clients], tf.int32)

    def run(weights, x, y):
        delta, *_ = steps(trainable, [], x[:, tf.newaxis], y[:, tf.newaxis], mask, counts)
        return delta

    return run


WAYS = {
    "client_loop": tf.function(client_loop),
    "client_loop_xla": tf.function(partial(client_loop, step=tf.function(client_step, jit_compile=True))),
    "grouped": tf.function(partial(in_parts, partial(cohort_step, grouped_forward))),
    "grouped_xla": tf.function(partial(in_parts, tf.function(partial(cohort_step, grouped_forward),
                                                             jit_compile=True))),
    "im2col": tf.function(partial(in_parts, partial(cohort_step, im2col_forward))),
    "shared_conv": tf.function(partial(in_parts, partial(cohort_step, shared_conv_forward))),
    "shared_weights": tf.function(shared_weights_step),
}
BASELINE = "client_loop"
COMPARED = ("client_loop", "client_loop_xla", "grouped", "grouped_xla", "im2col")  # same result expected: checked against client_loop


# --- where one client's step spends its time ---------------------------------------------------------

OP_CHAIN = 10  # each op run this many times in a row per call, so the call's own overhead does not count


def chained(op):
    """A function running ``op`` ``OP_CHAIN`` times, each run's first argument waiting for the last run.

    The wait is a data dependency (first argument plus 0 x the last output):
    with control dependencies only, ten conv2 runs took about the time of one
    (measured: TensorFlow drops or merges them). The ops here take a small
    first argument, so the added elementwise op costs little.
    """

    @tf.function
    def run(first, *rest):
        last = tf.zeros([])
        for _ in range(OP_CHAIN):
            last = tf.reshape(op(first + 0.0 * last, *rest), [-1])[0]  # one element: no copy of the output
        return last

    return run


def client_ops(weights, x):
    """``{name: (op, args, flops)}``: the big ops of one client's SGD step, on inputs of its shapes."""
    k1, _, k2, _, k3, _, _, _ = weights
    batch = x.shape[1]
    rng = tf.random.Generator.from_seed(0)
    image, hidden, features = x[0], rng.normal([batch, 14, 14, 32]), rng.normal([batch, 3136])
    conv1_out, conv2_out = rng.normal([batch, 28, 28, 32]), rng.normal([batch, 14, 14, 64])
    d_conv1, d_conv2, d_dense = rng.normal([batch, 28, 28, 32]), rng.normal([batch, 14, 14, 64]), rng.normal(
        [batch, 512])

    def conv(h, k):
        return tf.nn.conv2d(h, k, 1, "SAME")

    def filter_gradient(h, dy, k):
        return tf.compat.v1.nn.conv2d_backprop_filter(h, tf.shape(k), dy, [1, 1, 1, 1], "SAME")

    def input_gradient(dy, k, h):
        return tf.compat.v1.nn.conv2d_backprop_input(tf.shape(h), k, dy, [1, 1, 1, 1], "SAME")

    def pool_gradient(dy, h):
        return tf.raw_ops.MaxPoolGrad(orig_input=h, orig_output=pool(h), grad=dy, ksize=[1, 2, 2, 1],
                                      strides=[1, 2, 2, 1], padding="SAME")

    conv1 = 2 * batch * 28 * 28 * int(np.prod(k1.shape[1:]))
    conv2 = 2 * batch * 14 * 14 * int(np.prod(k2.shape[1:]))
    dense = 2 * batch * int(np.prod(k3.shape[1:]))
    return {
        "conv1 forward": (conv, (image, k1[0]), conv1),
        "conv1 filter gradient": (filter_gradient, (image, d_conv1, k1[0]), conv1),
        "pool1 gradient": (pool_gradient, (hidden, conv1_out), 0),
        "conv2 forward": (conv, (hidden, k2[0]), conv2),
        "conv2 filter gradient": (filter_gradient, (hidden, d_conv2, k2[0]), conv2),
        "conv2 input gradient": (input_gradient, (d_conv2, k2[0], hidden), conv2),
        "pool2 gradient": (pool_gradient, (rng.normal([batch, 7, 7, 64]), conv2_out), 0),
        "dense1 forward": (tf.matmul, (features, k3[0]), dense),
        "dense1 filter gradient": (partial(tf.matmul, transpose_a=True), (features, d_dense), dense),
        "dense1 input gradient": (partial(tf.matmul, transpose_b=True), (d_dense, k3[0]), dense),
        "dense1 SGD update": (lambda rate, w, g: w - rate * g, (tf.constant(LEARNING_RATE), k3[0], k3[1]),
                              2 * int(np.prod(k3.shape[1:]))),
    }


def op_breakdown(weights, x, y, step_gflop: float, repeats: int) -> list[dict]:
    """Each big op alone (one thread, nothing beside it), ms per call and GFLOP/s, and the whole client step."""
    functions = {name: (chained(op), args, flops) for name, (op, args, flops) in client_ops(weights, x).items()}
    step = tf.function(client_step)
    one_client = ([w[0] for w in weights], x[0], y[0])
    functions["whole client step"] = (lambda *a: step(*a)[0][0, 0, 0, 0], one_client, step_gflop * 1e9)
    for run, args, _ in functions.values():
        run(*args)  # traces
    seconds = {name: [] for name in functions}
    for _ in range(repeats):
        for name, (run, args, _) in functions.items():
            start = time.perf_counter()
            run(*args).numpy()
            seconds[name].append(time.perf_counter() - start)
    table = []
    for name, (_, _, flops) in functions.items():
        calls = 1 if name == "whole client step" else OP_CHAIN
        ms = 1e3 * statistics.median(seconds[name]) / calls
        table.append({"op": name, "ms": ms, "mflop": flops / 1e6, "gflops": flops / ms / 1e6})
    step, ops = table[-1], table[:-1]
    rest_ms, rest_mflop = step["ms"] - sum(r["ms"] for r in ops), step["mflop"] - sum(r["mflop"] for r in ops)
    rest = {"op": "the rest (pool, ReLU, bias, loss, small updates, the call)", "ms": rest_ms, "mflop": rest_mflop,
            "gflops": rest_mflop / rest_ms}
    return [*ops, rest, step]


# --- timing ---------------------------------------------------------------------------------------------

def timed(way, args) -> float:
    start = time.perf_counter()
    [t.numpy() for t in way(*args)]
    return time.perf_counter() - start


def measure(ways: dict, args, repeats: int) -> tuple[dict, dict]:
    """Per way: seconds of each call and its ratio to an adjacent ``client_loop`` call.

    Each way is timed right beside a baseline call, the two in turn first
    (A B, C A, A D, ...): on a shared machine the load drifts within seconds,
    so only adjacent calls compare.
    """
    for way in ways.values():
        way(*args)  # traces (and compiles)
    seconds = {name: [] for name in ways}
    ratios = {name: [] for name in ways}
    for repeat in range(repeats):
        for name, way in ways.items():
            if name == BASELINE:
                continue
            pair = (BASELINE, name) if repeat % 2 == 0 else (name, BASELINE)
            times = {n: timed(ways[n], args) for n in pair}
            seconds[name].append(times[name])
            seconds[BASELINE].append(times[BASELINE])
            ratios[name].append(times[name] / times[BASELINE])
    ratios[BASELINE] = [1.0]
    return seconds, ratios


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(u.numpy() - v.numpy()))) for u, v in zip(a, b))


def rows(seconds: dict, ratios: dict, gflop: float, peak: float, differences: dict) -> list[dict]:
    return [{"way": name, "ms": 1e3 * statistics.median(times), "ratio": statistics.median(ratios[name]),
             "gflops": gflop / statistics.median(times), "peak_fraction": gflop / statistics.median(times) / peak,
             "max_abs_difference": differences.get(name)}
            for name, times in seconds.items()]


def per_core_peak(peak: float) -> float:
    """The matmul peak of one op's threads: ``matmul_peak`` runs one chain per ``intra_op_threads`` cores."""
    return peak / max(1, runtime.schedulable_cores() // intra_op_threads())


def markdown(table: list[dict], breakdown: list[dict], gflop: float, peak: float, argv) -> str:
    core_peak = per_core_peak(peak)
    step_ms = breakdown[-1]["ms"]
    lines = [
        (f"Measured {datetime.date.today().isoformat()} ({os.cpu_count()} CPUs, {intra_op_threads()} thread(s) "
         f"per op, {PARTS} ops side by side), {gflop:.3g} GFLOP per cohort step, matmul peak {peak:.1f} GFLOP/s "
         f"({core_peak:.1f} per op), command: `python -m benchmarks.conv_cohort {' '.join(argv)}`"),
        "",
        "| way | ms per cohort step | ratio to client_loop | GFLOP/s | of peak | max abs diff vs client_loop |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in table:
        difference = "-" if r["max_abs_difference"] is None else f"{r['max_abs_difference']:.2g}"
        lines.append(f"| {r['way']} | {r['ms']:.1f} | {r['ratio']:.3f} | {r['gflops']:.1f} "
                     f"| {r['peak_fraction']:.2f} | {difference} |")
    lines += ["", "One client's step, op by op (each alone, one thread):", "",
              "| op | ms | MFLOP | GFLOP/s | of one op's peak | share of the step's time |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in breakdown:
        lines.append(f"| {r['op']} | {r['ms']:.2f} | {r['mflop']:.1f} | {r['gflops']:.1f} "
                     f"| {r['gflops'] / core_peak:.2f} | {r['ms'] / step_ms:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    print(json.dumps({"threads": runtime.thread_settings()}), flush=True)
    model, weights, x, y = workload_cohort(args.clients, args.batch)
    flops = step_flops(model, args.batch)
    client_gflop = (flops.per_example * args.batch + flops.per_step) / 1e9
    gflop = args.clients * client_gflop
    peak = matmul_peak()
    print(json.dumps({"peak_gflops": peak, "gflop_per_cohort_step": gflop}), flush=True)
    shared = load_workload(DEFAULT_WORKLOAD)
    ways = dict(WAYS, fedsim_client_loop=fedsim_client_loop(
        workload_model_fn(shared, "cnn", x.shape[2:]), args.clients, args.batch))
    cohort = (weights, x, y)
    reference = ways[BASELINE](*cohort)
    differences = {name: max_difference(ways[name](*cohort), reference) for name in COMPARED}
    seconds, ratios = measure(ways, cohort, args.repeats)
    table = rows(seconds, ratios, gflop, peak, differences)
    breakdown = op_breakdown(weights, x, y, client_gflop, args.repeats)
    for row in table + breakdown:
        print(json.dumps(row), flush=True)
    print(markdown(table, breakdown, gflop, peak, argv))


if __name__ == "__main__":
    main()
