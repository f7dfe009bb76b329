"""The floor of a FedAvg round on this machine: the round's arithmetic at the machine's matmul peak.

Usage:
  python -m benchmarks.floor [--kinds logreg mlp cnn] [--rounds 10] [--cohort 10] [--batch 20]
         [--pairs 3] [--fedsim] [--executor auto]

For each workload of ``benchmarks.fedavg`` (same model, data and cohorts;
equal and ragged populations), in one process and sitting:

- ``peak_gflops``: float32 matmul GFLOP/s with TensorFlow at this process's
  threads (fedsim's default unless ``TF_NUM_INTRAOP_THREADS`` is set):
  chains of 2048x2048 matmuls in one ``tf.function``, as many chains side by
  side as it takes to fill every core, best of several calls.
- ``gflop_per_round``: counted from the model. TensorFlow's per-op FLOP
  statistics (what ``tf.compat.v1.profiler``'s ``float_operation`` sums) over
  the graph of the compiled SGD step, at two batch sizes, give FLOPs per
  example and per step; a round is its cohort's examples and batches, median
  over rounds 2..R (the rounds fedsim's time covers). ``hand_ratio`` checks
  the per-example count against one from the layer shapes.
- ``floor_s``: gflop_per_round / peak_gflops, seconds per round.
- ``keras_s``: one Keras model trained by one compiled loop over each round's
  examples (concatenated, same batch size, same SGD), median s/round.
- with ``--fedsim``: fedsim's s/round (``benchmarks.fedavg``, its own process),
  alternating with the Keras loop (A B A B), ``--pairs`` times.

Prints one JSON line per workload, then a Markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import statistics
import sys
import time
from typing import NamedTuple

from fedsim import runtime  # first: fedsim's thread default applies here, as in every fedsim run

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops  # the FLOP statistics tf.compat.v1.profiler sums (no public API)

from benchmarks.compare import ENV, fedsim_command, run_json
from benchmarks.fedavg import DEFAULT_WORKLOAD, ReplayedCohorts, load_workload

MATMUL_SIZE = 2048
CHAIN = 2  # matmuls per chain and call: ~0.3 s a call here, so the call's own overhead does not count
LEARNING_RATE = 0.05  # benchmarks.fedavg's client SGD
LOCAL_EPOCHS = 1  # benchmarks.fedavg keeps build_fedavg's default


def intra_op_threads() -> int:
    """Threads TensorFlow gives each op in this process (its 0 means one per core)."""
    configured = (tf.config.threading.get_intra_op_parallelism_threads()
                  or int(os.environ.get(runtime.INTRA_OP_VARIABLE) or 0))
    return configured or runtime.schedulable_cores()


def matmul_peak(size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """This machine's float32 matmul GFLOP/s: the best of ``repeats`` calls, every core busy."""
    # With fewer threads per op than cores (fedsim's default), independent chains
    # run side by side on TensorFlow's inter-op threads, as fedsim's clients do.
    chains = max(1, runtime.schedulable_cores() // intra_op_threads())
    # Entries of N(0, 1/size) keep a chain's values near 1: no overflow, no slow denormals.
    starts = [tf.random.normal([size, size], stddev=size ** -0.5, seed=i) for i in range(chains)]
    factor = tf.random.normal([size, size], stddev=size ** -0.5, seed=chains)

    @tf.function
    def run(starts, factor):
        ends = []
        for x in starts:
            for _ in range(CHAIN):
                x = tf.matmul(x, factor)
            ends.append(tf.reduce_sum(x))
        return tf.add_n(ends)

    run(starts, factor).numpy()  # traces
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run(starts, factor).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 * CHAIN * chains / best / 1e9


def sgd_step(model: keras.Model):
    """One SGD step of ``model`` on a batch (sparse cross-entropy on logits), a function to trace."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    optimizer.build(model.trainable_variables)  # outside any trace: tf.function makes no variables

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def graph_flops(graph) -> int:
    """FLOPs of the ops a function graph's outputs and side effects need.

    Ops nothing needs (e.g. the gradient of the model's input, which the conv
    gradient builds anyway) are left out: TensorFlow prunes them when it runs
    the function, though ``tf.compat.v1.profiler`` would count them.
    """
    pending = [tensor.op for tensor in graph.outputs] + list(graph.control_outputs)
    needed = set()
    while pending:
        op = pending.pop()
        if op not in needed:
            needed.add(op)
            pending.extend(tensor.op for tensor in op.inputs)
            pending.extend(op.control_inputs)
    return sum(ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0 for op in needed)


class StepFlops(NamedTuple):
    """A training step's FLOPs: ``per_example`` x batch size + ``per_step`` (the weight update)."""
    per_example: int
    per_step: int


def step_flops(model: keras.Model, batch: int) -> StepFlops:
    """Counts the FLOPs of ``sgd_step(model)`` from its graph at batch sizes ``batch`` and ``2 * batch``."""
    step = tf.function(sgd_step(model))

    def count(size):
        specs = (tf.TensorSpec([size, *model.input_shape[1:]], tf.float32), tf.TensorSpec([size], tf.int32))
        return graph_flops(step.get_concrete_function(*specs).graph)

    one, two = count(batch), count(2 * batch)
    per_example = (two - one) // batch
    return StepFlops(per_example, one - per_example * batch)


def hand_flops(model: keras.Model) -> int:
    """Training FLOPs per example from the layer shapes: Dense and Conv2D multiply-adds only.

    A layer's forward pass is 2 x (kernel size) x (output positions); its
    weight gradient costs the same, and so does its input gradient, which
    every layer but the first needs. Biases and activations are left out.
    """
    forward = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            forward.append(2 * math.prod(layer.kernel.shape) * math.prod(layer.output.shape[1:-1]))
        elif layer.weights:
            raise ValueError(f"no hand count for {type(layer).__name__} layer {layer.name!r}")
    return 2 * sum(forward) + sum(forward[1:])


@dataclasses.dataclass
class Workload:
    """One benchmark workload: its model and, per measured round (2..R), its cohort's (x, y) per client."""
    kind: str
    ragged: bool
    model: keras.Model
    rounds: list

    @property
    def population(self) -> str:
        return "ragged" if self.ragged else "equal"


def load(kind: str, ragged: bool, rounds: int, cohort: int) -> Workload:
    """The shared workload as ``benchmarks.fedavg`` runs it: same builders, seed and cohorts."""
    shared = load_workload(DEFAULT_WORKLOAD)
    keras.utils.set_random_seed(0)
    model = shared.build_model(keras, kind)
    clients = shared.make_clients(kind=kind, ragged=ragged)
    cohorts = ReplayedCohorts(len(clients), cohort, rounds).cohorts[1:]  # round 1 (tracing) is not timed
    return Workload(kind, ragged, model, [[clients[i] for i in ids] for ids in cohorts])


def floor_row(workload: Workload, batch: int, peak: float) -> dict:
    """The workload's counted FLOPs per round and its floor at ``peak`` GFLOP/s."""
    flops = step_flops(workload.model, batch)
    per_round = [LOCAL_EPOCHS * sum(flops.per_example * len(y) + flops.per_step * math.ceil(len(y) / batch)
                                    for _, y in clients)
                 for clients in workload.rounds]
    gflop = statistics.median(per_round) / 1e9
    return {"kind": workload.kind, "population": workload.population,
            "mflop_per_example": flops.per_example / 1e6,
            "hand_ratio": flops.per_example / hand_flops(workload.model),
            "gflop_per_round": gflop, "peak_gflops": peak, "floor_s": gflop / peak}


def floors(kinds, rounds: int, cohort: int, batch: int) -> list[dict]:
    """``floor_row`` of every kind, equal and ragged, at one matmul peak measured first."""
    peak = matmul_peak()
    return [floor_row(load(kind, ragged, rounds, cohort), batch, peak) for kind in kinds for ragged in (False, True)]


def keras_loop(model: keras.Model, batch: int):
    """A compiled function training ``model`` on all of ``(x, y)`` in batches of ``batch``, one SGD step each."""
    step = sgd_step(model)
    specs = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32), tf.TensorSpec([None], tf.int32))

    @tf.function(input_signature=specs)
    def train(x, y):
        loss = tf.constant(0.0)
        for start in tf.range(0, tf.shape(x)[0], batch):
            loss = step(x[start:start + batch], y[start:start + batch])
        return loss

    return train


def round_tensors(workload: Workload) -> list:
    """Each measured round's examples as one (x, y) pair of tensors, clients concatenated."""
    return [tuple(tf.constant(np.concatenate(part)) for part in zip(*clients)) for clients in workload.rounds]


def keras_round_s(train, rounds: list) -> float:
    """Median seconds of ``train`` over the rounds' examples."""
    times = []
    for x, y in rounds:
        start = time.perf_counter()
        train(x, y).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(kind: str, ragged: bool, args, peak: float) -> dict:
    """``floor_row`` plus the Keras loop's s/round and, with ``--fedsim``, fedsim's, alternately."""
    workload = load(kind, ragged, args.rounds, args.cohort)
    row = floor_row(workload, args.batch, peak)
    train, rounds = keras_loop(workload.model, args.batch), round_tensors(workload)
    train(*rounds[0])  # traces
    keras_runs, fedsim_runs = [], []
    for _ in range(args.pairs):
        if args.fedsim:
            command = fedsim_command(kind, ragged, args.rounds, args.cohort, args.batch, args.executor)
            fedsim_runs.append(run_json(command, ENV)["round_s_median"])
        keras_runs.append(keras_round_s(train, rounds))
    row.update(keras_s=statistics.median(keras_runs), keras_runs=keras_runs)
    row["keras_floor"] = row["keras_s"] / row["floor_s"]
    if fedsim_runs:
        row.update(fedsim_s=statistics.median(fedsim_runs), fedsim_runs=fedsim_runs)
        row["fedsim_floor"] = row["fedsim_s"] / row["floor_s"]
    return row


def markdown(rows, argv) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} ({os.cpu_count()} CPUs, {intra_op_threads()} "
        f"thread(s) per op), command: `python -m benchmarks.floor {' '.join(argv)}`",
        "",
        "| kind | population | MFLOP/example (counted / hand) | GFLOP/round | peak GFLOP/s | floor s/round "
        "| Keras loop s/round | Keras/floor | fedsim s/round | fedsim/floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ours = f"{r['fedsim_s']:.4g} | {r['fedsim_floor']:.3g}" if "fedsim_s" in r else " | "
        lines.append(f"| {r['kind']} | {r['population']} | {r['mflop_per_example']:.4g} ({r['hand_ratio']:.3f}) "
                     f"| {r['gflop_per_round']:.4g} | {r['peak_gflops']:.1f} | {r['floor_s']:.3g} "
                     f"| {r['keras_s']:.4g} | {r['keras_floor']:.3g} | {ours} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=["logreg", "mlp", "cnn"], default=["logreg", "mlp", "cnn"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cohort", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--fedsim", action="store_true", help="also time fedsim, alternating with the Keras loop")
    parser.add_argument("--executor", default="auto", help="fedsim's executor (with --fedsim)")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds={args.rounds}: need >= 2 (the first round includes tracing)")
    if args.pairs < 1:
        parser.error(f"--pairs={args.pairs}: need >= 1")
    print(json.dumps({"threads": runtime.thread_settings()}), flush=True)
    peak = matmul_peak()
    print(json.dumps({"peak_gflops": peak}), flush=True)
    rows = []
    for kind in args.kinds:
        for ragged in (False, True):
            rows.append(measure(kind, ragged, args, peak))
            print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows, argv))


if __name__ == "__main__":
    main()
