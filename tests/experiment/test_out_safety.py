"""``fedsim run --out`` never destroys (issue 18, item 4): a directory holding a run's files is refused
unless ``--overwrite``, which removes only those; the user's other files are never touched."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedsim.checkpoint import list_checkpoints, read_header
from fedsim.cli import main
from fedsim.experiment import EXPECTED_ERRORS, load_config, run_experiment
from fedsim.experiment.lock import lock_run_dir
from fedsim.experiment.run import RUN_OUTPUTS, RunOutputsExistError, RunOutputTypeError
from tests.experiment.conftest import TINY_CONFIG

USER_CONFIG = "# my own experiment notes, kept as config.toml\nrounds = 7  # do not lose this comment\n"
FAST = ["--quiet", "--set", "rounds=2", "--set", "evaluation.every=0", "--set", "logging.tensorboard=false"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A folder of the user's: their own config.toml and notes, and the config they run."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "config.toml").write_text(USER_CONFIG, encoding="utf-8")
    (folder / "notes.txt").write_text("results so far\n", encoding="utf-8")
    (folder / "tiny.toml").write_text(TINY_CONFIG, encoding="utf-8")
    return folder


def test_the_refusals_are_expected_errors():
    for error in (RunOutputsExistError, RunOutputTypeError):
        assert issubclass(error, EXPECTED_ERRORS)


def test_out_dot_with_the_users_config_toml_is_refused_and_nothing_changes(user_dir, monkeypatch, capsys):
    monkeypatch.chdir(user_dir)
    before = snapshot(user_dir)
    assert main(["run", "tiny.toml", "--out", ".", *FAST]) == 2
    err = capsys.readouterr().err
    assert "'.' already holds a run's files (config.toml)" in err and "--overwrite" in err
    assert snapshot(user_dir) == before


def test_overwrite_replaces_only_the_run_outputs(user_dir, monkeypatch, capsys):
    monkeypatch.chdir(user_dir)
    (user_dir / "summary.json").write_text('{"old": true}\n')
    (user_dir / "checkpoints" / "round-000030").mkdir(parents=True)  # an older run's
    assert main(["run", "tiny.toml", "--out", ".", "--overwrite", *FAST]) == 0
    assert (user_dir / "notes.txt").read_text() == "results so far\n"
    assert (user_dir / "tiny.toml").read_text() == TINY_CONFIG
    assert load_config(user_dir / "config.toml").rounds == 2  # the run's resolved config now
    assert json.loads((user_dir / "summary.json").read_text())["rounds"] == 2
    assert [r for r, _ in list_checkpoints(user_dir / "checkpoints")] == [2]  # keep = 2, none of the old run
    assert not (user_dir / ".fedsim.lock").exists()


def test_overwrite_never_removes_the_config_being_run(user_dir, monkeypatch, capsys):
    monkeypatch.chdir(user_dir)
    (user_dir / "config.toml").write_text(TINY_CONFIG + "# mine\n", encoding="utf-8")
    before = snapshot(user_dir)
    assert main(["run", "config.toml", "--out", ".", "--overwrite", *FAST]) == 2
    assert "the config this command runs" in capsys.readouterr().err
    assert snapshot(user_dir) == before


def test_a_directory_with_only_an_older_runs_checkpoints_is_refused(tmp_path, capsys, tiny_config):
    out = tmp_path / "out"
    run_experiment(load_config(tiny_config), out, progress=False)
    for name in ("config.toml", "metrics.jsonl", "summary.json", "run.log"):
        (out / name).unlink()
    shutil.rmtree(out / "tensorboard")
    before = snapshot(out)
    assert main(["run", str(tiny_config), "--out", str(out), *FAST, "--set", "seed=9"]) == 2
    assert "already holds a run's files (checkpoints/)" in capsys.readouterr().err
    assert snapshot(out) == before  # the old run's round 4 is neither pruned nor mixed with the new run's


def test_the_checkpoints_of_an_overwritten_run_are_gone_before_the_new_run_writes(tmp_path, tiny_config):
    out = tmp_path / "out"
    run_experiment(load_config(tiny_config), out, progress=False)
    new = load_config(tiny_config, ["seed=9", "rounds=2"])
    run_experiment(new, out, progress=False, overwrite=True)
    hashes = {read_header(path)[1]["config_sha256"] for _, path in list_checkpoints(out / "checkpoints")}
    assert len(hashes) == 1 and [r for r, _ in list_checkpoints(out / "checkpoints")] == [2]


def test_out_that_is_a_file_is_named(tmp_path, capsys, tiny_config):
    target = tmp_path / "results.csv"
    target.write_text("a,b\n1,2\n")
    assert main(["run", str(tiny_config), "--out", str(target), *FAST]) == 2
    assert f"the run directory '{target}' is an existing file" in capsys.readouterr().err
    assert target.read_text() == "a,b\n1,2\n"


def test_a_users_own_run_log_is_refused_but_a_failed_starts_is_taken_over(tmp_path, capsys, tiny_config):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.log").write_text("my shell session log\n")
    assert main(["run", str(tiny_config), "--out", str(mine), *FAST]) == 2
    assert "(run.log)" in capsys.readouterr().err and (mine / "run.log").read_text() == "my shell session log\n"

    # What a run killed in round 1 leaves: its config and log, an empty metrics file, folders of round 1.
    failed = tmp_path / "failed"
    failed.mkdir()
    log = ("2026-01-01 10:00:00,000 INFO fedsim.experiment.run: starting run in failed\n"
           "2026-01-01 10:00:01,000 ERROR fedsim.experiment.run: run aborted: SIGKILL\n")
    (failed / "run.log").write_text(log)
    (failed / "config.toml").write_text("rounds = 1\n")
    (failed / "metrics.jsonl").write_text("")
    (failed / "tensorboard").mkdir()
    (failed / "tensorboard" / "events.out.tfevents.1").write_bytes(b"round 1, half")
    assert main(["run", str(tiny_config), "--out", str(failed), *FAST]) == 0
    assert (failed / "run.log").read_text().startswith(log)  # kept, appended to
    assert len((failed / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (failed / "tensorboard").exists()  # the killed run's, removed; this run writes none


def test_a_run_output_of_the_wrong_kind_is_never_removed(tmp_path, capsys, tiny_config):
    out = tmp_path / "out"
    (out / "run.log").mkdir(parents=True)
    (out / "run.log" / "mine.txt").write_text("keep")
    assert main(["run", str(tiny_config), "--out", str(out), "--overwrite", *FAST]) == 2
    err = capsys.readouterr().err
    assert f"'{out / 'run.log'}' is a folder, where a run writes its log file" in err
    assert (out / "run.log" / "mine.txt").read_text() == "keep"


def test_overwrite_of_a_directory_another_process_runs_in_removes_nothing(tmp_path, capsys, tiny_config):
    out = tmp_path / "out"
    run_experiment(load_config(tiny_config), out, progress=False)
    before = snapshot(out)
    with lock_run_dir(out):
        assert main(["run", str(tiny_config), "--out", str(out), "--overwrite", *FAST]) == 2
        assert "in use by another fedsim process" in capsys.readouterr().err
        assert {k: v for k, v in snapshot(out).items() if k != ".fedsim.lock"} == before


def test_every_run_output_is_refused(tmp_path, capsys, tiny_config):
    for name, (kind, _) in RUN_OUTPUTS.items():
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).mkdir() if kind == "folder" else (out / name).write_text("x")
        assert main(["run", str(tiny_config), "--out", str(out), *FAST]) == 2
        assert "already holds a run's files" in capsys.readouterr().err, name
