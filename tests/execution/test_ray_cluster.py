"""A real two-node Ray cluster on this machine, started with the `ray` CLI, joined by address.

The driver that joins the cluster runs in a subprocess (this file, run as a
script): `ray start --head` turns token authentication on, and Ray reads
RAY_AUTH_MODE once per process, so the driver must start with it set.
"""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """(address, env) of a head node and one worker node, 1 CPU each; stopped afterwards."""
    pytest.importorskip("ray")
    address = f"127.0.0.1:{free_port()}"
    # The cluster's own token, in the environment: the test never depends on a token file
    # this machine may or may not have (~/.ray/auth_token).
    env = dict(
        os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0", TF_CPP_MIN_LOG_LEVEL="2",
    )

    # Ray's CLI through this interpreter: works whether or not its script is on PATH.
    ray_command = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]

    # Each `ray start` runs in a session of its own, and the node's processes stay in its process
    # group; stopping those groups stops this cluster only (`ray stop` would stop every Ray
    # instance on the machine, other tests' and other people's included).
    groups = []

    def ray_start(*args):
        process = subprocess.Popen([*ray_command, "start", *args], env=env, start_new_session=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        groups.append(process.pid)
        output, _ = process.communicate(timeout=180)
        if process.returncode != 0:  # Ray's own account of why the node did not start
            pytest.fail(f"ray start {' '.join(args)} failed (exit {process.returncode}):\n{output}")

    # Ports and the session folder of this cluster alone, so another Ray instance on the machine
    # (defaults: client server 10001, dashboard agent 52365, /tmp/ray) cannot collide with it.
    # The folder is short: Ray's Unix sockets live in it, and their paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")

    def own_ports():
        return [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]

    try:
        ray_start(
            "--head",
            f"--port={address.split(':')[1]}",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={temp_dir}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            *own_ports(),
        )
        ray_start(f"--address={address}", "--num-cpus=1", *own_ports())
        yield address, env
    finally:
        stop_process_groups(groups)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_process_groups(groups, grace_s=10.0):
    """SIGTERM to every process of the groups, then SIGKILL to what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(group) for group in groups):
            time.sleep(0.2)


def _alive(group):
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


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
