"""The ``fedsim`` commands end to end on tiny configs: run, resume (after SIGKILL and after corruption), plot, compare, sweep."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from fedsim.cli import main
from fedsim.experiment import load_config
from tests.experiment.conftest import tiny_config  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]


def metrics_without_times(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "round_time_s"} for line in lines]


def checkpoint_arrays(run_dir: Path, round_num: int) -> dict[str, np.ndarray]:
    with np.load(run_dir / "checkpoints" / f"round-{round_num:06d}" / "arrays.npz", allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key


@pytest.fixture
def finished_run(tmp_path, tiny_config):  # noqa: F811
    run_dir = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


def test_run_writes_the_run_directory(finished_run, capsys):
    assert {p.name for p in finished_run.iterdir()} == {
        "config.toml", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard", "run.log"}
    records = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3, 4]
    assert [("eval" in r) for r in records] == [False, True, False, True]
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["rounds"] == 4 and summary["final_eval"] == records[-1]["eval"]
    assert summary["threads"]["cores"] >= 1 and "TF_NUM_INTRAOP_THREADS" in summary["threads"]
    # keep = 2 of the checkpoints at rounds 2 and 4
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == ["round-000002", "round-000004"]

def test_resolved_config_reloads_to_the_same_config(finished_run, tiny_config):  # noqa: F811
    assert load_config(finished_run / "config.toml") == load_config(tiny_config)


def test_tensorboard_has_one_scalar_per_metric_per_round(finished_run):
    import tensorflow as tf

    [events] = list((finished_run / "tensorboard").iterdir())
    steps: dict[str, list[int]] = {}
    for event in tf.compat.v1.train.summary_iterator(str(events)):
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            steps.setdefault(value.tag, []).append(event.step)
    assert steps["train/loss"] == [1, 2, 3, 4]
    assert steps["eval/accuracy"] == [2, 4]


def test_run_refuses_a_directory_that_holds_a_run(finished_run, tiny_config, capsys):  # noqa: F811
    assert main(["run", str(tiny_config), "--out", str(finished_run), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_config_error_is_printed_without_traceback(tiny_config, tmp_path, capsys):  # noqa: F811
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "x"), "--set", "sampler.cohort_size=0"]) == 2
    assert "sampler.cohort_size: must be > 0, got 0" in capsys.readouterr().err


def test_resume_skips_a_corrupted_newest_checkpoint(finished_run, tmp_path, capsys):
    reference = checkpoint_arrays(finished_run, 4)
    reference_metrics = metrics_without_times(finished_run)
    newest = finished_run / "checkpoints" / "round-000004" / "arrays.npz"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()
    assert main(["resume", str(finished_run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped checkpoint round-000004:" in out and "truncated or corrupted" in out
    assert_bitwise_equal(reference, checkpoint_arrays(finished_run, 4))
    assert metrics_without_times(finished_run) == reference_metrics


def test_resume_without_readable_checkpoint_stops(finished_run, capsys):
    for name in ("round-000002", "round-000004"):
        (finished_run / "checkpoints" / name / "state.json").write_text("{", encoding="utf-8")
    assert main(["resume", str(finished_run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no readable checkpoint" in err and "skipped round-000002" in err and "skipped round-000004" in err


def test_resume_of_a_directory_without_a_run(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "is not a run directory (no config.toml)" in capsys.readouterr().err


@pytest.mark.parametrize("algorithm", ["fedavg", "scaffold"])  # scaffold: per-client state on disk
def test_sigkill_then_resume_matches_an_uninterrupted_run_bit_for_bit(tmp_path, tiny_config, algorithm):  # noqa: F811
    rounds = ["--set", "rounds=16", "--set", "checkpoint.keep=8", "--set", f"algorithm.name={algorithm}"]
    killed = tmp_path / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", str(tiny_config), "--out", str(killed), "--quiet", *rounds],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = killed / "checkpoints" / "round-000002"
    deadline = time.monotonic() + 120
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()

    assert main(["resume", str(killed), "--quiet"]) == 0
    uninterrupted = tmp_path / "uninterrupted"
    assert main(["run", str(tiny_config), "--out", str(uninterrupted), "--quiet", *rounds]) == 0

    assert [r["round"] for r in metrics_without_times(killed)] == list(range(1, 17))
    assert metrics_without_times(killed) == metrics_without_times(uninterrupted)
    assert_bitwise_equal(checkpoint_arrays(uninterrupted, 16), checkpoint_arrays(killed, 16))


def test_plot_writes_a_png_of_the_requested_size(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["run", str(finished_run / "config.toml"), "--out", str(other), "--quiet",
                 "--set", "client_optimizer.learning_rate=0.1"]) == 0
    out = tmp_path / "curves.png"
    assert main(["plot", str(finished_run), str(other), "--metric", "train/loss", "--out", str(out),
                 "--size", "640", "480"]) == 0
    assert image.imread(out).shape[:2] == (480, 640)


def test_plot_of_an_unknown_metric_is_an_error(finished_run, tmp_path, capsys):
    assert main(["plot", str(finished_run), "--metric", "eval/recall", "--out", str(tmp_path / "p.png")]) == 2
    assert "no run records metric 'eval/recall'" in capsys.readouterr().err


def test_compare_lists_every_run_with_rounds_to_target(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["run", str(finished_run / "config.toml"), "--out", str(other), "--quiet", "--set", "rounds=2"]) == 0
    capsys.readouterr()
    assert main(["compare", str(finished_run), str(other), "--target", "eval/accuracy=0.0",
                 "--target", "train/loss=-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]}
    assert set(rows) == {str(finished_run), str(other)}
    assert header[:3] == ["run", "rounds", "wall time (s)"]
    assert rows[str(finished_run)][1] == "4" and rows[str(other)][1] == "2"
    reach = header.index("rounds to eval/accuracy >= 0")
    assert rows[str(finished_run)][reach] == "2" and rows[str(other)][reach] == "2"  # first evaluation is round 2
    never = header.index("rounds to train/loss <= -1")
    assert rows[str(other)][never] == "not reached"
    final_accuracy = json.loads((finished_run / "summary.json").read_text())["final_eval"]["accuracy"]
    assert rows[str(finished_run)][header.index("final eval/accuracy")] == f"{final_accuracy:.4f}"


def test_sweep_writes_one_row_per_grid_point_with_the_seed_count(tiny_config, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    assert main(["sweep", str(tiny_config), "--grid", "client_optimizer.learning_rate=0.01,0.05",
                 "--grid", "client.batch_size=20", "--seeds", "2", "--out", str(out), "--quiet",
                 "--set", "rounds=2", "--set", "checkpoint.every=0", "--set", "logging.tensorboard=false"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["point"] for r in rows] == [
        {"client_optimizer.learning_rate": "0.01", "client.batch_size": "20"},
        {"client_optimizer.learning_rate": "0.05", "client.batch_size": "20"}]
    assert [r["seeds"] for r in rows] == [2, 2]
    accuracies = [json.loads((Path(d) / "summary.json").read_text())["final_eval"]["accuracy"]
                  for d in rows[0]["run_dirs"]]
    assert rows[0]["final_eval.accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert rows[0]["final_eval.accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2 and table[2].startswith("| 0.01 | 20 | 2 |")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "point000-seed3", "point000-seed4", "point001-seed3", "point001-seed4"]


def test_sweep_validates_every_point_before_running(tiny_config, tmp_path, capsys):  # noqa: F811
    assert main(["sweep", str(tiny_config), "--grid", "sampler.cohort_size=2,0", "--out", str(tmp_path / "s")]) == 2
    assert "sampler.cohort_size: must be > 0, got 0" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["run", "resume", "data", "plot", "compare", "privacy", "sweep"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: fedsim {command}" in capsys.readouterr().out


# --set with a bare name: the block with its defaults (issue 17, item 8) ----------------------------------------


@pytest.mark.parametrize("override, block, expected", [
    ("executor=ray", "executor", {"name": "ray"}),
    ("executor=sequential", "executor", {"name": "sequential"}),
    ("sampler=poisson", "sampler", {"name": "poisson", "rate": 0.1}),
    ("sampler=uniform", "sampler", {"name": "uniform", "cohort_size": 10}),  # the table's cohort_size=3 is replaced
    ("model=mlp", "model", {"name": "mlp"}),
])
def test_set_a_block_to_a_bare_name(tiny_config, override, block, expected):  # noqa: F811
    from fedsim.experiment.config import config_to_dict

    resolved = config_to_dict(load_config(tiny_config, [override]))[block]
    assert {key: resolved[key] for key in expected} == expected


def test_a_bare_name_then_its_keys(tiny_config):  # noqa: F811
    config = load_config(tiny_config, ["sampler=round_robin", "sampler.cohort_size=2", "sampler.shuffle=false"])
    assert (config.sampler.name, config.sampler.cohort_size, config.sampler.shuffle) == ("round_robin", 2, False)


def test_an_unknown_bare_name_lists_the_allowed_ones(tiny_config, tmp_path, capsys):  # noqa: F811
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "x"), "--set", "executor=rya"]) == 2
    err = capsys.readouterr().err
    assert "executor: unknown name 'rya'" in err and "'ray'" in err
    assert not (tmp_path / "x").exists()


# fedsim data -------------------------------------------------------------------------------------------------


@pytest.fixture
def arrays_config(tmp_path) -> Path:
    """10 labels x 1,000 examples, cut into 100 clients by Dirichlet(0.1) (as tests/data/test_partition_min_size)."""
    labels = np.repeat(np.arange(10), 1000)
    np.savez(tmp_path / "arrays.npz", x=np.zeros((len(labels), 2), np.float32), y=labels)
    path = tmp_path / "arrays.toml"
    path.write_text(f"""\
rounds = 1
seed = 0
[data]
name = "arrays"
path = "{tmp_path / 'arrays.npz'}"
num_clients = 100
[data.partitioner]
name = "dirichlet"
alpha = 0.1
[model]
name = "logreg"
""", encoding="utf-8")
    return path


def _data_table(out: str) -> dict[str, list[str]]:
    """``fedsim data``'s table as {row label: [train, test]}."""
    rows = {}
    for line in out.splitlines()[1:-1]:  # below the header, above the classes line
        *label, train, test = line.split()
        rows[" ".join(label)] = [train, test]
    return rows


def test_data_prints_the_population_and_min_size_removes_empty_clients(arrays_config, tmp_path, capsys):
    from fedsim.data import partition

    assert main(["data", str(arrays_config)]) == 0
    before = _data_table(capsys.readouterr().out)
    parts = partition.dirichlet_label_skew(np.repeat(np.arange(10), 1000), 100, 0.1, seed=0)
    assert before["clients"] == ["100", "100"]
    # A client with no examples has no train examples: the partition's own empty clients.
    assert before["empty clients"][0] == str(sum(len(p) == 0 for p in parts)) == "2"
    assert before["examples per client: min"][0] == "0"

    png = tmp_path / "labels.png"
    assert main(["data", str(arrays_config), "--set", "data.partitioner.min_size=1", "--plot", str(png),
                 "--clients", "20"]) == 0
    after = _data_table(capsys.readouterr().out)
    assert after["empty clients"][0] == "0" and int(after["examples per client: min"][0]) >= 1
    assert image.imread(png).shape[2] in (3, 4)


def test_data_reports_an_unmeetable_min_size(arrays_config, capsys):
    assert main(["data", str(arrays_config), "--set", "data.partitioner.min_size=200"]) == 2
    assert "min_size=200 for 100 clients needs 20000 examples, only 10000 given" in capsys.readouterr().err
