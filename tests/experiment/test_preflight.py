"""Config problems found before any data is loaded, and what a failed run leaves behind."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedsim.cli import main
from fedsim.experiment import config_from_dict, load_config, run_experiment
from fedsim.experiment import run as run_module
from fedsim.experiment.build_data import DataBuildError
from fedsim.experiment.config import ConfigError
from fedsim.experiment.preflight import (
    CohortTooLargeError,
    CustomModuleNotFoundError,
    DataNotFoundError,
    check_config,
)
from fedsim.simulation.sampling import SamplingError
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)


def synthetic(**overrides) -> dict:
    raw = {"rounds": 1, "data": {"name": "synthetic", "num_devices": 4}, "model": {"name": "logreg"},
           "sampler": {"cohort_size": 2}, "logging": {"tensorboard": False}}
    for key, value in overrides.items():
        raw[key] = value
    return raw


def write_leaf_shard(path: Path, users: dict[str, list[int]]) -> None:
    """A LEAF shard whose users each hold one 2-feature example per label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    user_data = {u: {"x": [[0.5, 0.25]] * len(labels), "y": labels} for u, labels in users.items()}
    content = {"users": list(users), "num_samples": [len(v) for v in users.values()], "user_data": user_data}
    path.write_text(json.dumps(content), encoding="utf-8")


def leaf_config(train: Path, test: Path, cohort_size: int = 2, num_classes: int = 3) -> dict:
    return synthetic(data={"name": "leaf", "train_dir": str(train), "test_dir": str(test), "num_classes": num_classes},
                     sampler={"cohort_size": cohort_size})


# Cohort larger than the population ----------------------------------------------------------
def test_cohort_larger_than_synthetic_population_is_refused_before_the_run_directory(tmp_path):
    config = config_from_dict(synthetic(sampler={"cohort_size": 5}))
    with pytest.raises(CohortTooLargeError, match=r"sampler.cohort_size=5 .* population of 4 .*data.num_devices"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_cohort_equal_to_population_passes():
    check_config(config_from_dict(synthetic(sampler={"cohort_size": 4})))


def test_cohort_larger_than_leaf_train_writers_counts_train_users_only(tmp_path):
    write_leaf_shard(tmp_path / "train" / "a.json", {"w1": [0], "w2": [1]})
    write_leaf_shard(tmp_path / "train" / "b.json", {"w3": [2]})
    write_leaf_shard(tmp_path / "test" / "a.json", {f"t{i}": [0] for i in range(9)})  # 9 test writers
    check_config(config_from_dict(leaf_config(tmp_path / "train", tmp_path / "test", cohort_size=3)))
    with pytest.raises(CohortTooLargeError, match=r"cohort_size=4 .* population of 3 .*data.train_dir"):
        check_config(config_from_dict(leaf_config(tmp_path / "train", tmp_path / "test", cohort_size=4)))


def test_cohort_check_after_loading_when_the_config_cannot_tell(tmp_path, monkeypatch):
    # A population whose size is only known once read: the check runs after loading, before round 1.
    monkeypatch.setattr(run_module.preflight, "known_population_size", lambda data: None)
    config = config_from_dict(synthetic(sampler={"cohort_size": 5}))
    with pytest.raises(CohortTooLargeError, match="population of 4"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert "CohortTooLargeError" in (tmp_path / "run" / "run.log").read_text()


def test_cli_reports_the_cohort_error_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('rounds = 1\n[data]\nname = "synthetic"\nnum_devices = 3\n[model]\nname = "logreg"\n'
                    "[sampler]\ncohort_size = 10\n")
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "at most 3" in capsys.readouterr().err


# Missing data files ---------------------------------------------------------------------------
def test_missing_leaf_directory_is_named(tmp_path):
    write_leaf_shard(tmp_path / "train" / "a.json", {"w1": [0], "w2": [1]})
    config = config_from_dict(leaf_config(tmp_path / "train", tmp_path / "tset"))
    with pytest.raises(DataNotFoundError, match=r"data.test_dir='.*tset': no such directory or file"):
        check_config(config)


def test_leaf_directory_without_shards_is_named(tmp_path):
    (tmp_path / "test").mkdir()
    write_leaf_shard(tmp_path / "train" / "a.json", {"w1": [0], "w2": [1]})
    with pytest.raises(DataNotFoundError, match=r"data.test_dir=.* holds no \*.json shard"):
        check_config(config_from_dict(leaf_config(tmp_path / "train", tmp_path / "test")))


def test_missing_arrays_file_is_named(tmp_path):
    raw = synthetic(data={"name": "arrays", "path": str(tmp_path / "data.npz"), "num_clients": 4})
    with pytest.raises(DataNotFoundError, match=r"data.path='.*data.npz': no such file"):
        check_config(config_from_dict(raw))


@pytest.mark.parametrize("name, file_name", [("emnist", "emnist_all"), ("shakespeare", "shakespeare")])
def test_missing_tff_file_is_named_unless_download_is_on(tmp_path, name, file_name):
    raw = synthetic(data={"name": name, "cache_dir": str(tmp_path)}, model={"name": "logreg"})
    expected = rf"{file_name}.sqlite nor {file_name}.sqlite.lzma .*data.download = true"
    with pytest.raises(DataNotFoundError, match=expected):
        check_config(config_from_dict(raw))
    (tmp_path / f"{file_name}.sqlite.lzma").write_bytes(b"")
    check_config(config_from_dict(raw))  # present (compressed): the reader takes it from here


def test_preflight_errors_are_config_errors_the_cli_prints():
    for error in (CohortTooLargeError, DataNotFoundError, CustomModuleNotFoundError):
        assert issubclass(error, ConfigError)


# Custom model modules ------------------------------------------------------------------------
def custom(function: str) -> dict:
    return synthetic(model={"name": "custom", "function": function})


def test_unknown_custom_module_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CustomModuleNotFoundError, match=r"no module 'no_such_models_here' .*next to the config file"):
        check_config(config_from_dict(custom("no_such_models_here:build")))


def test_custom_module_next_to_the_config_is_found_without_running_it(tmp_path, monkeypatch):
    folder = tmp_path / "experiments"
    folder.mkdir()
    marker = tmp_path / "ran.txt"
    # Running this module would leave the marker: the check must only find it.
    (folder / "preflight_probe_models.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "run.toml").write_text('rounds = 1\n[data]\nname = "synthetic"\n[model]\nname = "custom"\n'
                                     'function = "preflight_probe_models:build"\n')
    monkeypatch.chdir(tmp_path)  # not the config's folder
    path_before = list(sys.path)
    check_config(load_config(folder / "run.toml"))
    assert not marker.exists()
    assert "preflight_probe_models" not in sys.modules
    assert sys.path == path_before
    with pytest.raises(CustomModuleNotFoundError):  # a config from elsewhere does not see it
        check_config(config_from_dict(custom("preflight_probe_models:build")))


def test_custom_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "preflight_cwd_models.py").write_text("")
    monkeypatch.chdir(tmp_path)
    check_config(config_from_dict(custom("preflight_cwd_models:build")))


# What a failed run leaves ---------------------------------------------------------------------
def test_run_log_records_a_failure_while_building_and_the_directory_is_reused(tmp_path):
    write_leaf_shard(tmp_path / "train" / "a.json", {"w1": [0, 5], "w2": [1]})  # label 5, but 3 classes
    write_leaf_shard(tmp_path / "test" / "a.json", {"t1": [2]})
    out = tmp_path / "run"
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataBuildError, match="label 5"):
        run_experiment(config_from_dict(leaf_config(tmp_path / "train", tmp_path / "test")), out, progress=False)
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "ERROR" in log and "run failed: DataBuildError" in log and "label 5" in log
    assert not (out / "metrics.jsonl").exists()
    fixed = config_from_dict(leaf_config(tmp_path / "train", tmp_path / "test", num_classes=6))
    assert run_experiment(fixed, out, progress=False)["rounds"] == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failure_before_the_first_round_removes_only_its_empty_metrics_file(tmp_path, monkeypatch, tiny_config):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    def failing_simulate(*args, metrics_path, **kwargs):
        open(metrics_path, "a").close()  # as the round loop does before round 1
        raise SamplingError("no cohort")

    monkeypatch.setattr(run_module, "simulate", failing_simulate)
    with pytest.raises(SamplingError):
        run_experiment(load_config(tiny_config), out, progress=False)
    assert not (out / "metrics.jsonl").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert "run failed: SamplingError: no cohort" in (out / "run.log").read_text()
