"""The schedule sampler: cohorts read from a file, by client id (.json) or position (.npy)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fedsim.privacy.participation import Participation
from fedsim.simulation.sampling import SamplingError, ScheduleError, ScheduleSampler

# Ids in an order where an id's digits are not its position: "3" sits at position 1.
CLIENT_IDS = ["f07", "3", "f01", "0", "f12"]


def write_json(tmp_path, value, name="cohorts.json"):
    path = tmp_path / name
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def test_json_ids_become_positions_round_by_round(tmp_path):
    sampler = ScheduleSampler.from_file(write_json(tmp_path, [["f12", "f07"], [3, "0"], []]), CLIENT_IDS)
    assert sampler.sample(1, 5).tolist() == [4, 0]  # the file's order, not sorted
    assert sampler.sample(2, 5).tolist() == [1, 3]  # the number 3 names the client "3", at position 1
    assert sampler.sample(3, 5).tolist() == []  # an empty round is allowed
    assert sampler.num_rounds == 3


def test_npy_rows_are_positions(tmp_path):
    path = tmp_path / "cohorts.npy"
    np.save(path, np.array([[4, 1], [0, 2]], dtype=np.int32))
    sampler = ScheduleSampler.from_file(path, CLIENT_IDS)
    assert [sampler.sample(r, 5).tolist() for r in (1, 2)] == [[4, 1], [0, 2]]


def test_participation_claims_no_amplification_for_the_largest_cohort(tmp_path):
    sampler = ScheduleSampler.from_file(write_json(tmp_path, [["f01"], ["f07", "3", "0"]]), CLIENT_IDS)
    assert sampler.participation(5) == Participation.none(5, 3)


def test_a_run_longer_than_the_schedule_is_named(tmp_path):
    path = write_json(tmp_path, [["f01"], ["0"]])
    sampler = ScheduleSampler.from_file(path, CLIENT_IDS)
    sampler.check_rounds(2)
    with pytest.raises(ScheduleError, match=r"the run has 3 rounds but .*cohorts.json schedules 2; set rounds to at most 2"):
        sampler.check_rounds(3)
    with pytest.raises(ScheduleError, match="schedules 2"):
        sampler.sample(3, 5)
    assert issubclass(ScheduleError, SamplingError)  # the CLI reports it without a traceback


def test_every_unknown_id_is_named_with_its_round(tmp_path):
    path = write_json(tmp_path, [["f01", "nobody"], ["f07"], ["ghost", 9]])
    with pytest.raises(ScheduleError) as error:
        ScheduleSampler.from_file(path, CLIENT_IDS)
    message = str(error.value)
    assert "'nobody' (round 1)" in message and "'ghost' (round 3)" in message and "'9' (round 3)" in message
    assert "5 clients, e.g. ['f07', '3', 'f01']" in message


@pytest.mark.parametrize("content, expected", [
    ({"1": ["f01"]}, "one list of client ids per round"),
    ([["f01"], "f07"], "one list of client ids per round"),
    ([["f01", 1.5]], r"round 1 has 1\.5"),
    ([["f01", True]], "round 1 has True"),
    ([["f01", "f01"]], "more than once"),
    ([[], []], "holds no client"),
])
def test_malformed_json_schedules_are_named(tmp_path, content, expected):
    with pytest.raises(ScheduleError, match=expected):
        ScheduleSampler.from_file(write_json(tmp_path, content), CLIENT_IDS)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ScheduleError, match="no such file"):
        ScheduleSampler.from_file(tmp_path / "missing.json", CLIENT_IDS)
    (tmp_path / "broken.json").write_text("[[", encoding="utf-8")
    with pytest.raises(ScheduleError, match="cannot read .*broken.json as JSON"):
        ScheduleSampler.from_file(tmp_path / "broken.json", CLIENT_IDS)
    (tmp_path / "cohorts.csv").write_text("0,1\n", encoding="utf-8")
    with pytest.raises(ScheduleError, match=r"\.json list of client-id lists or a 2-D \.npy"):
        ScheduleSampler.from_file(tmp_path / "cohorts.csv", CLIENT_IDS)


@pytest.mark.parametrize("array, expected", [
    (np.array([0, 1]), "2-D integer array"),
    (np.array([[0.0, 1.0]]), "2-D integer array"),
    (np.array([[0, 5]]), "position 5, outside the population's 0 .. 4"),
    (np.array([[0, -1]]), "position -1"),
])
def test_malformed_npy_schedules_are_named(tmp_path, array, expected):
    np.save(tmp_path / "cohorts.npy", array)
    with pytest.raises(ScheduleError, match=expected):
        ScheduleSampler.from_file(tmp_path / "cohorts.npy", CLIENT_IDS)


def test_positions_beyond_a_smaller_population_are_named():
    sampler = ScheduleSampler([[0, 7]], source="cohorts.npy")
    with pytest.raises(ScheduleError, match="round 1 has position 7, but the population has 5 clients"):
        sampler.sample(1, 5)


def test_the_config_block_reads_the_file_from_the_config_folder(tmp_path, monkeypatch):
    from fedsim.experiment import load_config

    folder = tmp_path / "study"
    folder.mkdir()
    write_json(folder, [["0", "1"], ["2"]])
    (folder / "run.toml").write_text(
        'rounds = 2\n[data]\nname = "synthetic"\nnum_devices = 3\n[model]\nname = "logreg"\n'
        '[sampler]\nname = "schedule"\npath = "cohorts.json"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    block = load_config(folder / "run.toml").sampler
    assert block.path == str(folder / "cohorts.json")
    sampler = block.build(seed=0, client_ids=["0", "1", "2"])
    assert [sampler.sample(r, 3).tolist() for r in (1, 2)] == [[0, 1], [2]]
