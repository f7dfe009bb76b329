"""The multi-device executor over two logical CPU devices (in a fresh process: devices are
configured before TensorFlow starts) matches the sequential executor, alone and through the
round of algorithms that send clients a gradient offset or an optimizer state."""
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import fedsim
    from fedsim.execution import MultiDeviceExecutor, SequentialExecutor
    from fedsim.client import ClientWork
    from tests.execution.helpers import RAGGED_SIZES, model_fn, population

    datasets = [tf.data.Dataset.from_tensor_slices(xy).batch(4) for xy in population(RAGGED_SIZES).values()]
    work = ClientWork(model_fn()(), fedsim.SGD(0.1, momentum=0.9))
    weights = fedsim.ModelWeights.from_model(work.model)
    multi = MultiDeviceExecutor(work)
    assert len(multi.devices) == 2, multi.devices
    expected = SequentialExecutor(work).train(weights, datasets)
    got = multi.train(weights, datasets)
    for e, g in zip(expected, got):
        assert e.num_examples == g.num_examples
        for a, b in zip(e.delta, g.delta):
            np.testing.assert_allclose(b, a, atol=1e-5)

    # Algorithms that send clients more than the weights, through the one round, on both devices.
    from tests.conformance.cases import ALGORITHMS, RAGGED_SIZES, flat_state, population, run
    clients = population(RAGGED_SIZES, 6, 3)
    ids = [f"client-{i}" for i in range(len(clients))]
    for name in ("scaffold", "mime_lite", "feddyn", "qffl"):
        reference = ALGORITHMS[name](model_fn(), executor_fn=SequentialExecutor)
        process = ALGORITHMS[name](model_fn(), executor_fn=MultiDeviceExecutor)
        assert len(process.executor.devices) == 2, process.executor.devices
        want, _ = run(reference, clients, 2)
        state, _ = run(process, clients, 2)
        for a, b in zip(flat_state(process, state, ids), flat_state(reference, want, ids)):
            np.testing.assert_allclose(a, b, atol=1e-5)
    print("ok")
""")


def test_two_cpu_devices_match_sequential():
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True,
                            env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
                            timeout=300)
    assert result.stdout.strip().endswith("ok"), result.stderr[-3000:]
