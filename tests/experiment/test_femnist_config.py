"""configs/femnist_cnn.toml end to end on small FEMNIST shards written in LEAF's own format.

The shards are what LEAF's split by writer produces: several ``*.json`` files
per split, writers listed out of order, and test writers that are not train
writers. Only the paths, the run length and the checkpoint cadence are
overridden (and, for the NumPy check of evaluation, the model).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedsim.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "femnist_cnn.toml"

# Shard file -> {writer: number of images}; ids deliberately not in file order.
TRAIN_SHARDS = {
    "all_data_0_niid_05_keep_0_train_9.json": {"f3000_10": 4, "f0100_03": 3},
    "all_data_1_niid_05_keep_0_train_9.json": {"f2000_44": 5},
    "all_data_2_niid_05_keep_0_train_9.json": {"f0007_01": 2, "f1500_20": 3},
}
TEST_SHARDS = {  # other writers than train's, as LEAF's split by user (-t user) gives
    "all_data_0_niid_05_keep_0_test_9.json": {"f4000_11": 3, "f0500_02": 2, "f4100_07": 1},
    "all_data_1_niid_05_keep_0_test_9.json": {"f0009_99": 4},
}


def write_shards(directory: Path, shards: dict[str, dict[str, int]], rng: np.random.Generator) -> dict:
    """Writes the shards; returns ``{writer: (x, y)}`` as written."""
    directory.mkdir(parents=True)
    written = {}
    for file_name, writers in shards.items():
        user_data = {
            writer: {
                "x": rng.random((count, 784)).round(4).tolist(),  # flat 28x28 images in [0, 1]
                "y": rng.integers(0, 62, count).tolist(),
            }
            for writer, count in writers.items()
        }
        # The key order of LEAF's split_data.py: users, num_samples, user_data.
        content = {"users": list(writers), "num_samples": list(writers.values()), "user_data": user_data}
        (directory / file_name).write_text(json.dumps(content), encoding="utf-8")
        written.update({w: (np.array(d["x"], np.float32), np.array(d["y"])) for w, d in user_data.items()})
    return written


def run_example(tmp_path: Path, capsys, *overrides: str) -> tuple[Path, dict]:
    """Runs the example for 2 rounds, evaluating after each, on freshly written shards."""
    rng = np.random.default_rng(0)
    write_shards(tmp_path / "femnist" / "train", TRAIN_SHARDS, rng)
    test_data = write_shards(tmp_path / "femnist" / "test", TEST_SHARDS, rng)
    out = tmp_path / "run"
    code = main([
        "run", str(CONFIG), "--out", str(out), "--quiet",
        "--set", f"data.train_dir={json.dumps(str(tmp_path / 'femnist' / 'train'))}",
        "--set", f"data.test_dir={json.dumps(str(tmp_path / 'femnist' / 'test'))}",
        "--set", "rounds=2",
        "--set", "evaluation.every=1",
        "--set", "logging.tensorboard=false",
        *[arg for override in overrides for arg in ("--set", override)],
    ])
    assert code == 0, capsys.readouterr().err
    return out, test_data


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_femnist_example_runs_as_shipped_with_the_cnn_on_flat_images(tmp_path, capsys):
    out, _ = run_example(tmp_path, capsys, "checkpoint.every=0")
    records = read_records(out)
    assert [r["round"] for r in records] == [1, 2]
    # The config's protocol: 3 clients per round, each a train writer.
    assert [r["num_clients"] for r in records] == [3, 3]
    for record in records:
        assert np.isfinite(record["train"]["loss"]) and np.isfinite(record["eval"]["loss"])
        # Pooled over the 10 test images: a multiple of 1/10.
        assert abs(record["eval"]["accuracy"] * 10 - round(record["eval"]["accuracy"] * 10)) < 1e-5


def test_femnist_evaluation_pools_every_test_writer(tmp_path, capsys):
    # Logistic regression, so the final model's test loss and accuracy over all
    # 10 test images can be worked out here in NumPy from the last checkpoint.
    out, test_data = run_example(tmp_path, capsys, "checkpoint.every=2", "model.name=logreg")
    with np.load(out / "checkpoints" / "round-000002" / "arrays.npz", allow_pickle=False) as npz:
        arrays = [npz[key] for key in npz.files]
    kernel = next(a for a in arrays if a.shape == (784, 62))
    bias = next(a for a in arrays if a.shape == (62,))
    x = np.concatenate([x for x, _ in test_data.values()]).astype(np.float64)
    y = np.concatenate([y for _, y in test_data.values()])
    assert len(y) == 10
    logits = x @ kernel + bias
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    evaluation = read_records(out)[-1]["eval"]
    np.testing.assert_allclose(evaluation["loss"], -log_softmax[np.arange(10), y].mean(), rtol=1e-4)
    np.testing.assert_allclose(evaluation["accuracy"], np.mean(logits.argmax(axis=1) == y), rtol=1e-6)
