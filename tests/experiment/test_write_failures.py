"""Failures while a run writes its records (issue 18, items 6 and 7): nothing already produced is lost.

A failing evaluation still writes its round's training record. A full disk
(ENOSPC, simulated by patching the write) while ``metrics.jsonl`` or SCAFFOLD's
client store is written leaves no half line or half file, ends as a named
error (exit 2) saying how to continue, and ``fedsim resume`` then ends where
an uninterrupted run ends. A second save of one round's checkpoint (a stopped
run's final one) does not rewrite it, so a full disk cannot fail it.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import fedsim.checkpoint.store as checkpoint_store
import fedsim.experiment.metrics_file as metrics_file
import fedsim.learning.client_state as client_state
from fedsim.algorithms import build_fedavg
from fedsim.checkpoint import CheckpointWriteError, load_checkpoint, save_checkpoint
from fedsim.cli import main
from fedsim.data import ClientData
from fedsim.experiment.metrics_file import MetricsAppender, MetricsWriteError, read_metrics
from fedsim.learning.client_state import ClientStateWriteError, NpzClientStore
from fedsim.simulation import UniformSampler, simulate
from tests.algorithms.helpers import IDS, initial_params, make_clients, model_fn
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def population(clients) -> ClientData:
    return ClientData.from_clients_and_tf_fn(list(IDS), lambda c: tf.data.Dataset.from_tensor_slices(
        clients[IDS.index(c)]))


def without(records: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in records]


def test_a_failing_evaluation_still_writes_its_rounds_training_record_then_raises(tmp_path):
    clients = make_clients()
    broken = {"now": False}

    def test_dataset(client_id: str) -> tf.data.Dataset:
        if broken["now"]:
            raise OSError(f"test shard of {client_id} unreadable")
        return tf.data.Dataset.from_tensor_slices(clients[IDS.index(client_id)])

    def run(**kwargs):
        process = build_fedavg(model_fn(initial_params()), batch_size=4, seed=0)
        return simulate(process, population(clients), rounds=3, sampler=UniformSampler(2, seed=0),
                        progress=False, **kwargs)

    metrics = tmp_path / "metrics.jsonl"
    with pytest.raises(OSError, match="test shard of a unreadable"):
        run(eval_data=ClientData.from_clients_and_tf_fn(list(IDS), test_dataset), eval_every=1,
            metrics_path=metrics, callbacks=[lambda state, record: broken.update(now=True)])  # after round 1
    written = read_metrics(metrics)
    assert [r["round"] for r in written] == [1, 2]
    assert "eval" in written[0] and "eval" not in written[1]
    assert written[1]["eval_error"] == "OSError: test shard of a unreadable"
    # The training records are those of a run that never evaluates.
    reference = run().history[:2]
    assert without(written, "round_time_s", "eval", "eval_clients", "eval_error") == without(reference, "round_time_s")


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


@pytest.mark.parametrize("failure", ["raises", "short write"])
def test_a_full_disk_never_leaves_half_a_metrics_line(tmp_path, monkeypatch, failure):
    path = tmp_path / "metrics.jsonl"
    appender = MetricsAppender(path)
    appender.append({"round": 1, "train": {"loss": 0.5}})
    appender.append({"round": 2, "train": {"loss": 0.4}})
    before = path.read_bytes()
    real_write = os.write

    def write_half(fd, data):
        written = real_write(fd, data[: len(data) // 2])  # what a filling disk takes before it refuses
        if failure == "raises":
            raise NO_SPACE
        return written

    monkeypatch.setattr(metrics_file.os, "write", write_half)
    with pytest.raises(MetricsWriteError) as error:
        appender.append({"round": 3, "train": {"loss": 0.3}})
    message = str(error.value)
    assert "round 3" in message and "No space left on device (the disk is full)" in message
    assert "the file is as it was before" in message and f"fedsim resume {tmp_path}" in message
    assert path.read_bytes() == before

    monkeypatch.setattr(metrics_file.os, "write", real_write)  # space freed
    appender.append({"round": 3, "train": {"loss": 0.3}})
    appender.close()
    assert [r["round"] for r in read_metrics(path)] == [1, 2, 3]


def round_line_fails(monkeypatch, round_num: int) -> None:
    """``os.write`` of round ``round_num``'s metrics line writes half of it, then the disk is full."""
    real_write = os.write

    def write(fd, data):
        if isinstance(data, bytes) and data.startswith(b'{"round": %d,' % round_num):
            real_write(fd, data[: len(data) // 2])
            raise NO_SPACE
        return real_write(fd, data)

    monkeypatch.setattr(metrics_file.os, "write", write)


def test_a_full_disk_while_appending_metrics_stops_the_run_clearly_and_resume_finishes_it(
        tmp_path, tiny_config, monkeypatch, capsys):  # noqa: F811
    run_dir, reference_dir, settings = tmp_path / "run", tmp_path / "reference", ["--quiet", "--set", "rounds=5"]
    round_line_fails(monkeypatch, 4)
    assert main(["run", str(tiny_config), "--out", str(run_dir), *settings]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsim: error: could not append round 4's record") and "Traceback" not in err
    assert "No space left on device (the disk is full)" in err and f"fedsim resume {run_dir}" in err
    assert lines_of(run_dir / "metrics.jsonl")[-1] == b""  # every line whole
    assert [r["round"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert (run_dir / "checkpoints" / "round-000002").is_dir()

    monkeypatch.undo()  # space freed
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert main(["run", str(tiny_config), "--out", str(reference_dir), *settings]) == 0
    resumed, reference = (read_metrics(d / "metrics.jsonl") for d in (run_dir, reference_dir))
    assert [r["round"] for r in resumed] == [1, 2, 3, 4, 5]
    assert without(resumed, "round_time_s") == without(reference, "round_time_s")


def test_a_client_state_write_that_fails_keeps_the_earlier_versions(tmp_path, monkeypatch):
    store = NpzClientStore(tmp_path / "client_state")
    first = [np.arange(3, dtype=np.float32), np.ones((2, 2))]
    store.put("a", first, round_num=1)
    real_savez, real_replace = np.savez, os.replace

    def savez_on_a_full_disk(handle, *arrays):
        handle.write(b"PK\x03\x04 partial")
        raise NO_SPACE

    monkeypatch.setattr(client_state.np, "savez", savez_on_a_full_disk)
    with pytest.raises(ClientStateWriteError) as error:
        store.put("a", [a + 1 for a in first], round_num=2)
    message = str(error.value)
    assert "client 'a'" in message and "round 2" in message and "(the disk is full)" in message
    assert "earlier state, if any, is intact" in message and f"fedsim resume {tmp_path}" in message
    monkeypatch.setattr(client_state.np, "savez", real_savez)

    def replace_on_a_full_disk(source, target):
        raise NO_SPACE

    monkeypatch.setattr(client_state.os, "replace", replace_on_a_full_disk)
    with pytest.raises(ClientStateWriteError):
        store.put("a", [a + 2 for a in first], round_num=1)  # a rerun round: the old version must survive
    monkeypatch.setattr(client_state.os, "replace", real_replace)

    for got, want in zip(store.get("a"), first):
        assert np.array_equal(got, want) and got.dtype == want.dtype
    assert store.get("a", before_round=2) is not None and len(store) == 1
    assert [p.name for p in (tmp_path / "client_state").glob("*/*/*")] == ["r1.npz"]  # no temporary left

    monkeypatch.setattr(client_state.np, "savez", savez_on_a_full_disk)
    with pytest.raises(ClientStateWriteError):
        store.put("b", first, round_num=1)
    assert store.get("b") is None and len(store) == 1  # a client whose first write failed has no state


def test_prune_removes_what_a_writer_killed_mid_put_left(tmp_path):
    store = NpzClientStore(tmp_path)
    store.put("a", [np.zeros(2)], round_num=1)
    store.put("a", [np.ones(2)], round_num=2)
    folder = next(tmp_path.glob("*/*"))
    (folder / "tmp-999999.partial").write_bytes(b"PK\x03\x04 cut short")  # another pid: a killed run's
    store.prune(2)
    assert sorted(p.name for p in folder.iterdir()) == ["r2.npz"]


SCAFFOLD = '[algorithm]\nname = "scaffold"\n'


def test_a_full_disk_while_writing_scaffolds_client_store_stops_clearly_and_resume_matches(
        tmp_path, tiny_config, monkeypatch, capsys):  # noqa: F811
    config = tmp_path / "scaffold.toml"
    config.write_text(tiny_config.read_text() + SCAFFOLD, encoding="utf-8")
    run_dir, reference_dir, settings = tmp_path / "run", tmp_path / "reference", ["--quiet", "--set", "rounds=5"]
    real_replace = os.replace

    def replace(source, target):
        if str(source).endswith(".partial") and Path(target).name == "r3.npz":
            raise NO_SPACE
        return real_replace(source, target)

    monkeypatch.setattr(client_state.os, "replace", replace)
    assert main(["run", str(config), "--out", str(run_dir), *settings]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsim: error: could not write client") and "state of round 3" in err
    assert "(the disk is full)" in err and f"fedsim resume {run_dir}" in err and "Traceback" not in err
    assert [r["round"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    assert (run_dir / "checkpoints" / "round-000002").is_dir()
    assert not list((run_dir / "client_state").glob("*/*/*.partial"))

    monkeypatch.undo()  # space freed
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert main(["run", str(config), "--out", str(reference_dir), *settings]) == 0
    final = Path("checkpoints") / "round-000005" / "arrays.npz"
    stores = [{str(p.relative_to(d)): p for p in (d / "client_state").glob("*/*/r*.npz")}
              for d in (run_dir, reference_dir)]
    assert stores[0].keys() == stores[1].keys() and stores[0]
    for resumed, reference in [(run_dir / final, reference_dir / final)] + [
            (stores[0][k], stores[1][k]) for k in stores[1]]:
        with np.load(resumed) as got, np.load(reference) as want:
            assert got.files == want.files
            assert all(np.array_equal(got[k], want[k]) for k in want.files), resumed


def test_a_second_save_of_one_round_keeps_the_checkpoint_even_on_a_full_disk(tmp_path, monkeypatch):
    state = {"weights": [np.arange(6, dtype=np.float32).reshape(2, 3)], "round": 2}
    path = save_checkpoint(tmp_path, 2, state, meta={"config_sha256": "x"}, keep=1)
    written = (path / "state.json").read_bytes()

    def savez_on_a_full_disk(handle, **arrays):
        raise NO_SPACE

    monkeypatch.setattr(checkpoint_store.np, "savez", savez_on_a_full_disk)
    # The stopped run's final save of the round its checkpointer just wrote: nothing to write.
    assert save_checkpoint(tmp_path, 2, state, meta={"config_sha256": "x"}, keep=1) == path
    assert (path / "state.json").read_bytes() == written
    # Other contents for that round must be written, and fail as before, the old copy intact.
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        save_checkpoint(tmp_path, 2, {"weights": [np.zeros((2, 3), np.float32)], "round": 2},
                        meta={"config_sha256": "x"}, keep=1)
    restored = load_checkpoint(path, state)
    assert np.array_equal(restored.state["weights"][0], state["weights"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000002"]
