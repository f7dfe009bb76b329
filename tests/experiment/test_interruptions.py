"""A run survives SIGINT, SIGKILL (twice) and a full disk, and its metrics hold every round once."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fedsim.checkpoint.store as checkpoint_store
from fedsim.checkpoint import list_checkpoints, load_checkpoint
from fedsim.cli import main
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]


def _rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "fedsim.cli", *args, "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before the test could interrupt it"


def test_sigint_writes_a_final_checkpoint_and_metrics_then_resume_finishes(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"
    process = _start(["run", str(tiny_config), "--out", str(run_dir), "--set", "rounds=100",
                      "--set", "checkpoint.every=0", "--set", "evaluation.every=0"])
    _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    done = _rounds(run_dir)
    assert done == list(range(1, len(done) + 1)) and len(done) < 100
    assert f"interrupted after round {done[-1]} of 100" in stderr and "fedsim resume" in stderr
    assert [r for r, _ in list_checkpoints(run_dir / "checkpoints")] == [done[-1]]
    assert json.loads((run_dir / "summary.json").read_text())["interrupted"] is True

    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert _rounds(run_dir) == list(range(1, 101))
    assert json.loads((run_dir / "summary.json").read_text())["interrupted"] is False


def test_metrics_hold_every_round_once_after_two_kill_and_resume_cycles(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    settings = ["--set", "rounds=30", "--set", "checkpoint.keep=3"]
    process = _start(["run", str(tiny_config), "--out", str(run_dir), *settings])
    _wait_for(lambda: any(r >= 4 for r, _ in list_checkpoints(checkpoints)), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first_kill = max(r for r, _ in list_checkpoints(checkpoints))

    process = _start(["resume", str(run_dir)])
    _wait_for(lambda: any(r >= first_kill + 4 for r, _ in list_checkpoints(checkpoints)), process)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert _rounds(run_dir) == list(range(1, 31))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint_and_stops_clearly(
        tmp_path, tiny_config, monkeypatch, capsys):  # noqa: F811
    real_savez = np.savez
    rounds_written = []

    def savez_on_a_disk_that_fills_up(handle, **arrays):
        rounds_written.append(len(rounds_written) + 1)
        if len(rounds_written) >= 2:  # the checkpoint of round 4 (every 2 rounds)
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(handle, **arrays)

    monkeypatch.setattr(checkpoint_store.np, "savez", savez_on_a_disk_that_fills_up)
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet", "--set", "rounds=8"]) == 2
    err = capsys.readouterr().err
    assert "could not write the checkpoint of round 4" in err and "No space left on device" in err
    assert "the newest intact checkpoint is round 2" in err and "fedsim resume" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["round-000002"]
    restored = load_checkpoint(run_dir / "checkpoints" / "round-000002", _template(run_dir))
    assert restored.round_num == 2
    assert _rounds(run_dir) == [1, 2, 3, 4]  # nothing already measured is lost

    monkeypatch.setattr(checkpoint_store.np, "savez", real_savez)  # space freed
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert _rounds(run_dir) == list(range(1, 9))


def _template(run_dir: Path):
    from fedsim.experiment import build_experiment, load_config

    return {"server_state": build_experiment(load_config(run_dir / "config.toml")).process.initialize()}


def test_a_checkpoint_of_another_model_architecture_names_the_mismatched_variable(tmp_path, tiny_config, capsys):  # noqa: F811
    # config.toml unchanged, the checkpoint's model different: what a change in a model's code would give.
    from fedsim.checkpoint import save_checkpoint
    from fedsim.experiment.resume_checks import checkpoint_meta

    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet", "--set", "rounds=2",
                 "--set", "model.name=mlp", "--set", "model.hidden=[9]"]) == 0
    config_text = (run_dir / "config.toml").read_text()

    def plant(model: str) -> None:
        other = tmp_path / "other.toml"
        other.write_text(config_text.replace('name = "mlp"\nhidden = [\n    9,\n]', model))
        state = _template_of(other)
        for _, path in list_checkpoints(run_dir / "checkpoints"):
            shutil.rmtree(path)
        save_checkpoint(run_dir / "checkpoints", 2, state, meta=checkpoint_meta(config_text))

    plant('name = "mlp"\nhidden = [7]')
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no readable checkpoint" in err
    # Keras numbers layer names per process (dense, dense_1, ...): match the shape of the name.
    assert re.search(r"model_weights\.trainable\[0\] \(variable 'sequential(_\d+)?/dense(_\d+)?/kernel'\): "
                     r"checkpoint has float32 array of shape \[60, 7\], the run has float32 array of shape \[60, 9\]", err)

    plant('name = "logreg"')
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    assert re.search(r"this model's trainable variables: \['sequential(_\d+)?/dense(_\d+)?/kernel', "
                     r"'sequential(_\d+)?/dense(_\d+)?/bias', ", capsys.readouterr().err)


def _template_of(config_path: Path):
    from fedsim.experiment import build_experiment, load_config

    return {"server_state": build_experiment(load_config(config_path)).process.initialize()}


def test_sigterm_stops_like_sigint_with_a_final_checkpoint(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"
    process = _start(["run", str(tiny_config), "--out", str(run_dir), "--set", "rounds=100",
                      "--set", "checkpoint.every=0", "--set", "evaluation.every=0"])
    _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    done = _rounds(run_dir)
    assert done == list(range(1, len(done) + 1)) and len(done) < 100
    assert f"interrupted after round {done[-1]} of 100 (SIGTERM)" in stderr and "Traceback" not in stderr
    assert [r for r, _ in list_checkpoints(run_dir / "checkpoints")] == [done[-1]]


@pytest.mark.parametrize("when", ["start-up", "second signal"])
def test_a_signal_at_start_up_or_a_second_one_ends_without_a_traceback(tmp_path, tiny_config, when):  # noqa: F811
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.jsonl"
    process = _start(["run", str(tiny_config), "--out", str(run_dir), "--set", "rounds=100",
                      "--set", "evaluation.every=0"])
    if when == "start-up":  # the run directory exists: the data and model are being built
        _wait_for(lambda: (run_dir / "config.toml").exists(), process)
        process.send_signal(signal.SIGINT)
    else:
        _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 1, process)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("fedsim: ")
    assert not list((run_dir / "checkpoints").glob(".tmp-*")) if (run_dir / "checkpoints").exists() else True


def test_resume_rewrites_tensorboard_and_removes_temporary_checkpoints(tmp_path, tiny_config):  # noqa: F811
    import tensorflow as tf

    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet"]) == 0
    # As after a kill between round 4's metrics and its checkpoint, mid-write of another.
    shutil.rmtree(run_dir / "checkpoints" / "round-000004")
    leftover = run_dir / "checkpoints" / ".tmp-round-000004-999999"
    leftover.mkdir()
    (leftover / "arrays.npz").write_bytes(b"partial")
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    assert not leftover.exists()
    assert _rounds(run_dir) == [1, 2, 3, 4]
    steps: dict[str, list[int]] = {}
    for events in sorted((run_dir / "tensorboard").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert sorted(steps["train/loss"]) == [1, 2, 3, 4]  # rounds 3 and 4 ran twice, recorded once
    assert sorted(steps["eval/accuracy"]) == [2, 4]


def _training(run_dir: Path) -> list[dict]:
    return [json.loads(line)["train"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_round_one(tmp_path, tiny_config, capsys):  # noqa: F811
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    settings = ["--set", "checkpoint.every=3", "--quiet"]
    assert main(["run", str(tiny_config), "--out", str(reference), *settings]) == 0
    assert main(["run", str(tiny_config), "--out", str(stopped), *settings]) == 0
    # What a kill after round 1's record, before round 3's checkpoint, leaves behind.
    shutil.rmtree(stopped / "checkpoints")
    (stopped / "summary.json").unlink()
    first = (stopped / "metrics.jsonl").read_text().splitlines()[0]
    (stopped / "metrics.jsonl").write_text(first + "\n")
    capsys.readouterr()

    assert main(["resume", str(stopped), "--quiet"]) == 0
    assert "stopped before its first checkpoint; starting again from round 1" in capsys.readouterr().out
    assert _rounds(stopped) == [1, 2, 3, 4]
    assert _training(stopped) == _training(reference)  # the same seeded run, every round once


def test_a_finished_run_without_checkpoints_is_never_restarted(tmp_path, tiny_config, capsys):  # noqa: F811
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--set", "checkpoint.every=0", "--quiet"]) == 0
    before = (run_dir / "metrics.jsonl").read_bytes()
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    assert "no readable checkpoint" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_bytes() == before


def _wrapped_abort():
    """What CPython gives when a signal handler raises inside a C extension's call: a SystemError
    whose cause is the handler's exception (seen in CI from TensorFlow's nest at start-up)."""
    from fedsim.experiment.signals import RunAborted

    try:
        raise RunAborted("SIGINT during start-up: no round ran in this process")
    except RunAborted as aborted:
        raise SystemError("<built-in method IsNested> returned a result with an exception set") from aborted


def test_an_abort_wrapped_by_a_c_call_is_found_behind_the_error():
    from fedsim.experiment.signals import RunAborted, interrupt_behind

    with pytest.raises(SystemError) as caught:
        _wrapped_abort()
    assert isinstance(interrupt_behind(caught.value), RunAborted)
    try:  # implicit chaining (__context__) counts too
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("while interrupted")
    except ValueError as error:
        assert isinstance(interrupt_behind(error), KeyboardInterrupt)
    assert interrupt_behind(ValueError("a real failure")) is None


def test_a_signal_that_lands_inside_a_c_call_at_start_up_ends_like_any_abort(
        tmp_path, tiny_config, monkeypatch, capsys):  # noqa: F811
    import fedsim.experiment.build as build

    def interrupted_load(*args, **kwargs):
        _wrapped_abort()

    monkeypatch.setattr(build, "build_population", interrupted_load)
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "fedsim: SIGINT during start-up: no round ran in this process"
    log = (run_dir / "run.log").read_text()
    assert "run aborted: SIGINT during start-up" in log and "Traceback" not in log
