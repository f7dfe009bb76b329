"""A real two-node Ray cluster on this machine, started with the `ray` CLI, joined by address.

The driver that joins the cluster runs in a subprocess (this file, run as a
script): `ray start --head` turns token authentication on, and Ray reads
RAY_AUTH_MODE once per process, so the driver must start with it set.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedsim
from fedsim.models import zoo

# One worker runs every module that starts Ray (pytest-xdist), one module at a time.
pytestmark = pytest.mark.xdist_group("ray")

NUM_FEATURES, NUM_CLASSES, ROUNDS = 5, 3, 2


def logreg_model_fn():
    model = zoo.logistic_regression(NUM_FEATURES, NUM_CLASSES)
    model.set_weights(
        [np.full((NUM_FEATURES, NUM_CLASSES), 0.1, np.float32), np.zeros(NUM_CLASSES, np.float32)]
    )
    spec = (tf.TensorSpec([None, NUM_FEATURES], tf.float32), tf.TensorSpec([None], tf.int32))
    return fedsim.from_keras_model(
        model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), spec
    )


def simulate(executor_fn=None):
    rng = np.random.default_rng(0)
    clients = {
        str(i): (
            rng.normal(size=(n, NUM_FEATURES)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, size=n).astype(np.int32),
        )
        for i, n in enumerate([6, 9, 4, 12])
    }
    process = fedsim.build_fedavg(
        logreg_model_fn, client_optimizer=fedsim.SGD(0.1), batch_size=3, executor_fn=executor_fn
    )
    sampler = fedsim.UniformSampler(cohort_size=3, seed=1)
    data = fedsim.ClientData.from_tensor_slices(clients)
    return process, fedsim.simulate(process, data, rounds=ROUNDS, sampler=sampler, progress=False)


@pytest.fixture
def cluster():
    """(address, env) of a head node and one worker node, 1 CPU each; stopped afterwards."""
    pytest.importorskip("ray")
    from fedsim.execution.local_cluster import RayStartError, local_ray_cluster

    try:
        with local_ray_cluster(nodes=2, start_timeout_s=180) as (address, env):
            yield address, env
    except RayStartError as error:  # Ray's own account of why a node did not start
        pytest.fail(str(error))


def test_simulation_on_a_two_node_cluster_equals_in_process(cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "ray_result.npz"
    completed = subprocess.run(
        [sys.executable, __file__, address, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    got = np.load(out)
    assert got["alive_nodes"] == 2 and got["num_actors"] == 2  # one actor per CPU: one per node
    _, want = simulate()
    for i, array in enumerate(want.state.model_weights.trainable):
        np.testing.assert_allclose(got[f"trainable_{i}"], array, atol=1e-6)
    np.testing.assert_allclose(got["loss"], want.history[-1]["train"]["loss"], atol=1e-6)


def test_a_cluster_without_nodes_is_refused_before_ray_starts():
    from fedsim.execution.local_cluster import local_ray_cluster

    with pytest.raises(ValueError, match="nodes=0"):
        with local_ray_cluster(nodes=0):
            pass


def _simulate_on_cluster(address, out):
    import ray

    from fedsim.execution.ray_executor import RayExecutor

    process, result = simulate(RayExecutor.factory(logreg_model_fn, address=address))
    with process.executor:
        np.savez(
            out,
            alive_nodes=len([n for n in ray.nodes() if n["Alive"]]),
            num_actors=len(process.executor.actors),
            loss=result.history[-1]["train"]["loss"],
            **{f"trainable_{i}": a for i, a in enumerate(result.state.model_weights.trainable)},
        )


if __name__ == "__main__":
    _simulate_on_cluster(*sys.argv[1:])
