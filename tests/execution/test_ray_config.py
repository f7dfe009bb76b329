"""`executor = {name = "ray"}` in a config: the same metrics as the in-process executor."""
import json
import os

import pytest

from fedsim.cli import main
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)

# One worker runs every module that starts Ray (pytest-xdist), one module at a time.
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _train_losses(run_dir):
    return [json.loads(line)["train"]["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("actor_executor", ["vectorized", "sequential"])
def test_a_config_run_on_ray_matches_the_sequential_run(tmp_path, tiny_config, actor_executor):  # noqa: F811
    """The actors build each client from the population's source with the run's seeded
    shuffle (tiny_config has a shuffle buffer); ``actors`` would raise if they could not.
    Each actor trains its cohort share in one call, or one client per task."""
    common = ["--quiet", "--set", "rounds=3", "--set", "checkpoint.every=0"]
    try:
        assert main(["run", str(tiny_config), "--out", str(tmp_path / "ray"), *common,
                     "--set", "executor.name=ray", "--set", "executor.num_actors=2",
                     "--set", "executor.client_data=actors",
                     "--set", f"executor.actor_executor={actor_executor}"]) == 0
    finally:
        ray.shutdown()
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "seq"), *common]) == 0
    assert _train_losses(tmp_path / "ray") == pytest.approx(_train_losses(tmp_path / "seq"), abs=1e-6)
    record = json.loads((tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["measurements"]["faults/clients_dropped"] == 0


def test_fednova_runs_on_ray_from_a_config_as_in_process(tmp_path, tiny_config):  # noqa: F811
    """Every algorithm runs through the one round, so FedNova (once refused on Ray) runs there too."""
    common = ["--quiet", "--set", "rounds=2", "--set", "checkpoint.every=0", "--set", "algorithm.name=fednova"]
    try:
        assert main(["run", str(tiny_config), "--out", str(tmp_path / "ray"), *common,
                     "--set", "executor.name=ray", "--set", "executor.num_actors=2"]) == 0
    finally:
        ray.shutdown()
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "seq"), *common,
                 "--set", "executor.name=sequential"]) == 0
    assert _train_losses(tmp_path / "ray") == pytest.approx(_train_losses(tmp_path / "seq"), abs=1e-6)


@pytest.mark.parametrize("field, value, choice", [("client_data", "workers", "actors"),
                                                  ("actor_executor", "threads", "vectorized")])
def test_an_unknown_ray_option_value_is_a_config_error(tmp_path, tiny_config, capsys, field, value, choice):  # noqa: F811
    out = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet",
                 "--set", "executor.name=ray", "--set", f"executor.{field}={value}"]) == 2
    error = capsys.readouterr().err
    assert f"executor.{field}" in error and f"'{value}'" in error and choice in error
    assert not out.exists()
