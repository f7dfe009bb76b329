"""Honest empty rounds (issue 18, item 2): a round or evaluation over no examples has no loss or accuracy.

Absent, not 0.0: a loss of 0.0 reads as a perfect model, so a run whose every
update was zeroed used to "reach" any loss target at round 1. The expected
values here come from what the inputs hold (how many examples the clients
have, which clients were zeroed), never from the code under test.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from fedsim.cli import _print_summary, main
from fedsim.experiment.report import metric_curve
from fedsim.experiment.run import summarize
from fedsim.simulation.loop import _postfix
from tests.experiment.conftest import TINY_CONFIG
from tests.learning.test_faults import GOOD, _nan_client, _process

MEASURED = {"loss", "accuracy"}


def _datasets(clients):
    return [tf.data.Dataset.from_tensor_slices(c) for c in clients]


def _empty_client():
    x, y = GOOD[0]
    return x[:0], y[:0]


@pytest.mark.parametrize("cohort", ["all_nan", "all_empty"])
def test_a_round_in_which_no_client_trained_has_no_metrics(cohort):
    clients = [_nan_client(), _nan_client()] if cohort == "all_nan" else [_empty_client(), _empty_client()]
    process = _process()
    result = process.next(process.initialize(), _datasets(clients), client_ids=["a", "b"])
    assert result.num_examples == 0
    assert dict(result.metrics) == {}  # no loss, no accuracy: not 0.0, not NaN
    expected_zeroed = 2 if cohort == "all_nan" else 0
    assert result.measurements["faults/nonfinite_updates"] == expected_zeroed


def test_a_round_with_one_trained_client_keeps_its_metrics():
    process = _process()
    result = process.next(process.initialize(), _datasets([_nan_client(), GOOD[1]]), client_ids=["nan", "good"])
    assert result.num_examples == len(GOOD[1][1])
    assert np.isfinite(result.metrics["loss"])  # this test model's one measured metric


def test_evaluation_over_empty_clients_keeps_only_the_counts():
    process = _process()
    metrics = process.evaluate(process.initialize().model_weights, _datasets([_empty_client(), _empty_client()]))
    assert {k: int(v) for k, v in metrics.items()} == {"num_examples": 0, "num_batches": 0}


# End to end: every update non-finite (learning rate 3e38) and no test examples (test_fraction 0).
@pytest.fixture(scope="module")
def empty_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("empty")
    config = folder / "tiny.toml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    run_dir = folder / "run"
    assert main(["run", str(config), "--out", str(run_dir), "--quiet", "--set", "rounds=2",
                 "--set", "client_optimizer.learning_rate=3e38", "--set", "data.test_fraction=0.0",
                 "--set", "checkpoint.every=0", "--set", "logging.tensorboard=false"]) == 0
    return run_dir


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def test_records_of_zeroed_rounds_hold_no_loss_or_accuracy(empty_run):
    records = _records(empty_run)
    assert [r["round"] for r in records] == [1, 2]
    for record in records:
        # The tiny config's cohort: 3 clients, every update zeroed, so nothing counted.
        assert record["measurements"]["faults/nonfinite_updates"] == record["num_clients"] == 3
        assert record["num_examples"] == 0
        assert not MEASURED & set(record["train"])


def test_evaluation_over_no_test_examples_holds_no_loss_or_accuracy(empty_run):
    evaluation = _records(empty_run)[-1]["eval"]  # evaluation.every = 2
    assert evaluation.get("num_examples") == 0 and not MEASURED & set(evaluation)


def test_summary_says_no_examples(empty_run, capsys):
    summary = json.loads((empty_run / "summary.json").read_text(encoding="utf-8"))
    assert summary["final_train_num_examples"] == 0 and "loss" not in summary["final_train"]
    assert "accuracy" not in summary["final_eval"]
    _print_summary(summary)
    out = capsys.readouterr().out
    assert "train loss:    no examples" in out and "test accuracy: no examples" in out
    assert "0.0000" not in out


def test_compare_never_counts_empty_rounds_towards_a_target(empty_run, capsys):
    assert main(["compare", str(empty_run), "--target", "train/loss=0.3", "--target", "eval/accuracy=0.0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    cells = dict(zip(header, row))
    assert cells["rounds to train/loss <= 0.3"] == "not reached"
    assert cells["rounds to eval/accuracy >= 0"] == "not reached"
    assert cells["train rounds with no examples"] == "2" and cells["eval rounds with no examples"] == "1"


# Files written before this fix recorded 0.0 for such rounds: the count, not the 0.0, decides.
OLD_STYLE = [
    {"round": 1, "train": {"loss": 0.0, "accuracy": 0.0, "num_examples": 0}, "num_examples": 0,
     "eval": {"loss": 0.0, "accuracy": 0.0, "num_examples": 0}},
    {"round": 2, "train": {"loss": 0.5, "accuracy": 0.7, "num_examples": 10}, "num_examples": 10},
    {"round": 3, "train": {"loss": 0.0}, "num_examples": 0},
]


def test_old_files_zero_rounds_are_no_examples_not_values():
    loss = metric_curve(OLD_STYLE, "train/loss")
    assert (loss.rounds, loss.values, loss.empty_rounds, loss.last_is_empty) == ([2], [0.5], [1, 3], True)
    counts = metric_curve(OLD_STYLE, "train/num_examples")  # a count is measured even on no examples
    assert counts.rounds == [1, 2] and counts.values == [0, 10]  # round 3's train section has no count
    assert metric_curve(OLD_STYLE, "eval/accuracy").empty_rounds == [1]


def test_compare_shows_a_final_round_without_examples_as_such(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in OLD_STYLE), encoding="utf-8")
    assert main(["compare", str(run), "--target", "train/loss=0.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = dict(zip([c.strip() for c in lines[0].strip("|").split("|")],
                     [c.strip() for c in lines[2].strip("|").split("|")]))
    assert cells["final train/loss"] == "no examples" and cells["best train/loss"] == "0.5000"
    assert cells["final eval/accuracy"] == "no examples" and cells["best eval/accuracy"] == "no examples"
    assert cells["rounds to train/loss <= 0.3"] == "not reached"


def test_progress_bar_says_no_examples():
    history = [
        {"round": 1, "train": {"loss": 0.4, "accuracy": 0.8}, "num_examples": 5,
         "eval": {"accuracy": 0.7, "num_examples": 9}},
        {"round": 2, "train": {}, "num_examples": 0, "eval": {"num_examples": 0, "num_batches": 0}},
    ]
    postfix = _postfix(history)
    assert postfix == {"train": "no examples", "test_acc": "no examples (round 2)"}
    assert _postfix(history[:1]) == {"train_loss": "0.4000", "train_acc": "0.8000", "test_acc": "0.7000 (round 1)"}


def test_summarize_counts_the_last_rounds_examples():
    history = [{"round": 1, "train": {"loss": 0.3}, "num_examples": 8},
               {"round": 2, "train": {}, "num_examples": 0}]
    assert summarize(history)["final_train_num_examples"] == 0
    assert summarize(history[:1])["final_train_num_examples"] == 8
    assert summarize([])["final_train_num_examples"] is None

