"""A paper's protocol stated in a config reproduces it exactly.

TensorFlow Federated's reference FedAvg protocol (initial weights from a file,
the cohort of every round from a file, no shuffling, client SGD with a batch
size for one epoch, weighted or unweighted mean of the client deltas, server
learning rate 1) is written as a config and run with ``fedsim run``; the model
weights after every round must be those of FedAvg done by hand in NumPy on the
same arrays (``tests/logreg_reference``: the softmax cross-entropy gradient
written out, float64), weight by weight.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsim import cli
from fedsim.checkpoint import checkpoint_path, load_checkpoint
from fedsim.experiment import build_experiment, load_config
from tests.logreg_reference import fedavg_round

NUM_FEATURES, NUM_CLASSES, NUM_CLIENTS = 5, 3, 4
SIZES = [6, 6, 5, 5]  # np.array_split of 22 rows into 4 contiguous parts, as data.shuffle = false deals them
SCHEDULE = [[2, 0], ["1", "3", "0"], ["3"]]  # ids: a JSON number n names the client "n"
BATCH_SIZE, LEARNING_RATE, ROUNDS = 4, 0.1, 3

CONFIG = """\
rounds = {rounds}
seed = 7

[data]
name = "arrays"
path = "{data}"
num_clients = {num_clients}
test_fraction = 0.0
partitioner = "iid"
shuffle = false

[model]
name = "logreg"
initial_weights = "init.npz"

[algorithm]
name = "fedavg"

[client]
batch_size = {batch_size}
local_epochs = 1
weighted = {weighted}

[client_optimizer]
name = "sgd"
learning_rate = {learning_rate}

[server_optimizer]
name = "sgd"
learning_rate = 1.0

[sampler]
name = "schedule"
path = "cohorts.json"

[evaluation]
every = 0

[checkpoint]
every = 1
keep = {rounds}

[logging]
tensorboard = false
"""


def _protocol(folder: Path, weighted: bool, rounds: int = ROUNDS) -> tuple[Path, dict]:
    """Writes the data, initial weights, schedule and config; returns the config path and the arrays."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(sum(SIZES), NUM_FEATURES)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=sum(SIZES)).astype(np.int32)
    y[0] = NUM_CLASSES - 1  # the arrays block counts classes as max label + 1
    # float64 in the file: the run casts to the model's float32, the reference keeps float64.
    kernel = rng.normal(scale=0.5, size=(NUM_FEATURES, NUM_CLASSES))
    bias = rng.normal(scale=0.5, size=NUM_CLASSES)
    folder.mkdir()
    data = folder / "data" / "points.npz"  # data paths are read from the working directory: given absolute
    data.parent.mkdir()
    np.savez(data, x=x, y=y)
    np.savez(folder / "init.npz", **{"dense/kernel": kernel, "dense/bias": bias})  # names checked
    (folder / "cohorts.json").write_text(json.dumps(SCHEDULE), encoding="utf-8")
    config = folder / "protocol.toml"
    config.write_text(CONFIG.format(rounds=rounds, data=data, num_clients=NUM_CLIENTS, batch_size=BATCH_SIZE,
                                    weighted=str(weighted).lower(), learning_rate=LEARNING_RATE), encoding="utf-8")
    return config, {"x": x, "y": y, "kernel": kernel, "bias": bias}


def _reference(arrays: dict, weighted: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """FedAvg by hand: client k holds rows of the k-th contiguous part, in file order."""
    bounds = np.cumsum([0] + SIZES)
    clients = {str(k): (arrays["x"][bounds[k]:bounds[k + 1]].astype(np.float64), arrays["y"][bounds[k]:bounds[k + 1]])
               for k in range(NUM_CLIENTS)}
    kernel, bias = arrays["kernel"], arrays["bias"]
    after = []
    for cohort in SCHEDULE:
        kernel, bias = fedavg_round(kernel, bias, [clients[str(c)] for c in cohort], BATCH_SIZE, LEARNING_RATE,
                                    weighted=weighted)
        after.append((kernel, bias))
    return after


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
def test_fedsim_run_reproduces_fedavg_by_hand(tmp_path, monkeypatch, weighted):
    config_path, arrays = _protocol(tmp_path / "protocol", weighted)
    elsewhere = tmp_path / "elsewhere"  # the config's files are found from its folder, not the working directory
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_dir = tmp_path / "run"
    assert cli.main(["run", str(config_path), "--out", str(run_dir), "--quiet"]) == 0

    experiment = build_experiment(load_config(run_dir / "config.toml"))  # the run's own config, paths absolute
    start = experiment.process.initialize().model_weights
    np.testing.assert_array_equal(start.trainable[0], arrays["kernel"].astype(np.float32))
    np.testing.assert_array_equal(start.trainable[1], arrays["bias"].astype(np.float32))
    template = {"server_state": experiment.process.initialize()}
    for round_num, (kernel, bias) in enumerate(_reference(arrays, weighted), start=1):
        state = load_checkpoint(checkpoint_path(run_dir / "checkpoints", round_num), template).state["server_state"]
        got_kernel, got_bias = state.model_weights.trainable
        np.testing.assert_allclose(got_kernel, kernel, atol=1e-5, err_msg=f"kernel after round {round_num}")
        np.testing.assert_allclose(got_bias, bias, atol=1e-5, err_msg=f"bias after round {round_num}")

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["num_clients"] for r in records] == [len(c) for c in SCHEDULE]
    assert [r["num_examples"] for r in records] == [sum(SIZES[int(c)] for c in cohort) for cohort in SCHEDULE]


def test_a_run_longer_than_the_schedule_stops_before_round_one(tmp_path, monkeypatch, capsys):
    config_path, _ = _protocol(tmp_path / "protocol", weighted=True, rounds=ROUNDS + 1)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(config_path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "the run has 4 rounds but" in message and "cohorts.json schedules 3" in message
    assert not (tmp_path / "run" / "checkpoints").exists()
