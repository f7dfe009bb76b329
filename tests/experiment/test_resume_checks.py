"""``fedsim resume`` continues only the run its checkpoints belong to (issue 18, item 5).

Every checkpoint records config.toml; an edited config.toml is refused with
a diff, an edited round in state.json is refused as corrupted, ``--rounds N``
is the one change allowed, and checkpoints from before config hashing are
refused by name.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedsim.checkpoint import list_checkpoints, read_header
from fedsim.cli import main
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)


def _rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def finished(tmp_path, tiny_config):  # noqa: F811
    """A finished 4-round run: checkpoints at rounds 2 and 4."""
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


def test_every_checkpoint_records_the_config_it_was_written_under(finished):
    text = (finished / "config.toml").read_text()
    for _, path in list_checkpoints(finished / "checkpoints"):
        _, meta = read_header(path)
        assert meta["config_toml"] == text
        assert len(meta["config_sha256"]) == 64


def test_an_edited_config_is_refused_with_a_diff_and_nothing_is_touched(finished, capsys):
    config = finished / "config.toml"
    config.write_text(config.read_text().replace("seed = 3", "seed = 4"))
    metrics_before = (finished / "metrics.jsonl").read_bytes()
    assert main(["resume", str(finished), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not the config the run's checkpoints were written under" in err
    assert "\n-seed = 3\n+seed = 4\n" in err
    assert "fedsim run" in err  # the fix: a new run from the edited file
    assert (finished / "metrics.jsonl").read_bytes() == metrics_before


def test_a_hand_edited_rounds_line_is_refused_and_points_to_the_rounds_option(finished, capsys):
    config = finished / "config.toml"
    config.write_text(config.read_text().replace("rounds = 4", "rounds = 6"))
    assert main(["resume", str(finished), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "\n-rounds = 4\n+rounds = 6\n" in err and "--rounds N" in err


def test_rounds_option_extends_the_run_and_records_the_change(finished, capsys):
    assert main(["resume", str(finished), "--quiet", "--rounds", "6"]) == 0
    assert "rounds set to 6 (was 4)" in capsys.readouterr().out
    assert _rounds(finished) == [1, 2, 3, 4, 5, 6]
    text = (finished / "config.toml").read_text()
    assert "rounds = 6  # set by 'fedsim resume --rounds 6' (was 4)" in text
    assert json.loads((finished / "summary.json").read_text())["rounds"] == 6
    # The new checkpoint records the new config; a plain resume accepts it (nothing left to run).
    assert read_header(finished / "checkpoints" / "round-000006")[1]["config_toml"] == text
    assert main(["resume", str(finished), "--quiet"]) == 0
    assert _rounds(finished) == [1, 2, 3, 4, 5, 6]


def test_a_marked_rounds_change_is_accepted_before_its_first_checkpoint(finished):
    # A run killed after 'resume --rounds 6' rewrote config.toml, before any new checkpoint:
    # the newest checkpoint still records rounds = 4, and a plain resume must go on.
    from fedsim.experiment.resume_checks import set_rounds

    config = finished / "config.toml"
    config.write_text(set_rounds(config.read_text(), 6, was=4))
    assert main(["resume", str(finished), "--quiet"]) == 0
    assert _rounds(finished) == [1, 2, 3, 4, 5, 6]


def test_rounds_below_the_checkpoint_is_a_named_error(finished, capsys):
    config_before = (finished / "config.toml").read_text()
    assert main(["resume", str(finished), "--quiet", "--rounds", "3"]) == 2
    err = capsys.readouterr().err
    assert "--rounds 3 is fewer than the 4 rounds" in err and "--rounds 4 or more" in err
    assert (finished / "config.toml").read_text() == config_before
    assert main(["resume", str(finished), "--quiet", "--rounds", "0"]) == 2
    assert "--rounds 0: a run has at least 1 round" in capsys.readouterr().err


def test_an_edited_round_in_state_json_is_refused_not_silently_used(finished, capsys):
    newest = finished / "checkpoints" / "round-000004" / "state.json"
    document = json.loads(newest.read_text())
    document["round"] = 3  # would make the resumed run skip round 4's rerun... or repeat rounds
    newest.write_text(json.dumps(document))
    assert main(["resume", str(finished), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped checkpoint round-000004" in out and "header SHA-256" in out
    assert _rounds(finished) == [1, 2, 3, 4]  # resumed from round 2, every round once


def test_another_runs_checkpoint_is_never_resumed_from(finished, tmp_path, tiny_config, capsys):  # noqa: F811
    other = tmp_path / "other"
    assert main(["run", str(tiny_config), "--out", str(other), "--quiet", "--set", "seed=9",
                 "--set", "rounds=6", "--set", "checkpoint.keep=3"]) == 0
    capsys.readouterr()
    shutil.copytree(other / "checkpoints" / "round-000006", finished / "checkpoints" / "round-000006")
    assert main(["resume", str(finished), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped checkpoint round-000006: written under another config.toml" in out
    assert _rounds(finished) == [1, 2, 3, 4]


def test_checkpoints_from_before_config_hashing_are_refused_by_name(finished, capsys):
    for _, path in list_checkpoints(finished / "checkpoints"):
        # What fedsim wrote before: format version 1, no header hash, no config in the metadata.
        document = json.loads((path / "state.json").read_text())
        document.update(version=1, meta={})
        del document["header_sha256"]
        (path / "state.json").write_text(json.dumps(document))
    assert main(["resume", str(finished), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "predates config hashing" in err and "round-000004" in err and "fedsim run" in err
