"""fedsim on the shared peer workload: FedAvg rounds timed through the public API.

Usage:
  python -m benchmarks.fedavg --kind {logreg,mlp,cnn} --rounds R --cohort C --batch B
         [--ragged] [--executor auto|sequential|vectorized|multi_device]

Prints one JSON line: ``round_s_median`` (median wall seconds per round after the
first), ``total_s`` (all rounds after the first), ``first_round_s`` (tracing
included), ``peak_rss_mb``, plus checks (``vars_changed`` of ``vars_in_model``).
The workload (data, model, cohorts) is ``../shared/peers/workload.py``, so
figures compare with the peers' scripts one to one.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU, like the peers' figures

DEFAULT_WORKLOAD = Path(__file__).resolve().parents[2] / "shared" / "peers" / "workload.py"


def load_workload(path: Path):
    """Imports the shared workload module (data and model definitions, no peer code)."""
    spec = importlib.util.spec_from_file_location("peer_workload", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReplayedCohorts:
    """Cohorts exactly as the peers draw them: one ``default_rng(1).choice`` per round."""

    def __init__(self, population_size: int, cohort_size: int, rounds: int):
        import numpy as np

        rng = np.random.default_rng(1)
        self.cohorts = [rng.choice(population_size, cohort_size, replace=False) for _ in range(rounds)]

    def sample(self, round_num: int, population_size: int):
        return self.cohorts[round_num - 1]


def workload_model_fn(workload, kind: str, x_shape, label_dtype: str = "int32"):
    """The workload's Keras model as a fedsim model (sparse cross-entropy on logits, accuracy)."""
    import keras
    import tensorflow as tf

    import fedsim

    input_spec = (tf.TensorSpec([None, *x_shape], tf.float32), tf.TensorSpec([None], label_dtype))

    def model_fn():
        return fedsim.from_keras_model(
            workload.build_model(keras, kind),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=input_spec,
            metrics=[keras.metrics.SparseCategoricalAccuracy()],
        )

    return model_fn


def build_workload(kind: str, batch: int, ragged: bool, executor: str,
                   workload_path: Path = DEFAULT_WORKLOAD):
    """``(population, FedAvg process)`` for the shared workload, through fedsim's public API."""
    import keras

    import fedsim
    from fedsim.execution import make_executor

    workload = load_workload(workload_path)
    keras.utils.set_random_seed(0)  # the same initial model weights for every executor
    clients = workload.make_clients(kind=kind, ragged=ragged)
    # Zero-padded ids keep the population's order equal to the workload's.
    data = fedsim.ClientData.from_tensor_slices({f"{i:04d}": xy for i, xy in enumerate(clients)})
    model_fn = workload_model_fn(workload, kind, clients[0][0].shape[1:])
    process = fedsim.build_fedavg(
        model_fn,
        client_optimizer=fedsim.SGD(0.05),
        server_optimizer=fedsim.SGD(1.0),
        batch_size=batch,
        executor_fn=lambda work: make_executor(executor, work),
    )
    return data, process


def run(kind: str, rounds: int, cohort: int, batch: int, ragged: bool, executor: str,
        workload_path: Path = DEFAULT_WORKLOAD) -> dict:
    import numpy as np

    import fedsim

    data, process = build_workload(kind, batch, ragged, executor, workload_path)
    state = process.initialize()
    before = state.model_weights.trainable
    result = fedsim.simulate(process, data, rounds, ReplayedCohorts(len(data.client_ids), cohort, rounds),
                             progress=False, state=state)
    times = [record["round_time_s"] for record in result.history]
    after = result.state.model_weights.trainable
    later = times[1:] or times
    return {
        "system": "fedsim", "kind": kind, "ragged": ragged, "rounds": rounds, "cohort": cohort,
        "batch": batch, "executor": process.executor.name,
        "first_round_s": times[0], "round_s_median": statistics.median(later), "total_s": sum(times[1:]),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vars_in_model": len(before),
        "vars_changed": sum(int(not np.array_equal(a, b)) for a, b in zip(before, after)),
        "final_loss": result.history[-1]["train"]["loss"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["logreg", "mlp", "cnn"], required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cohort", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--ragged", action="store_true")
    parser.add_argument("--executor", default="auto")
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds={args.rounds}: need >= 2 (the first round includes tracing)")
    print(json.dumps(run(args.kind, args.rounds, args.cohort, args.batch, args.ragged, args.executor,
                         args.workload)))


if __name__ == "__main__":
    main()
