"""``fedsim plot`` and ``fedsim compare`` on metrics files someone edited, damaged or wrote to break them.

Issue 18, item 9: a line that is not a record, and a value that is not a
number, is skipped and counted in one warning line naming the file, never a
traceback; plot sizes and output folders are checked before anything is
drawn, each refusal a named error with exit code 2.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.cli import main
from fedsim.experiment.metrics_file import MetricsFileError, read_metrics, read_records
from fedsim.experiment.report import ReportError, check_plot_options, metric_curve
from tests.test_cli_startup import _NO_TENSORFLOW, REPO

GOOD = [{"round": r, "round_time_s": 0.5, "train": {"loss": 1.0 / r, "accuracy": 0.25 * r},
         "eval": {"accuracy": 0.2 * r, "num_examples": 10}, "num_examples": 20} for r in (1, 2)]

# Each hostile line, and the reason the warning gives for skipping it.
HOSTILE = {
    "number": (b"42", "not a JSON object"),
    "list": (b"[1, 2, 3]", "not a JSON object"),
    "string": (b'"round 3"', "not a JSON object"),
    "not_json": (b"{round: 3", "not JSON"),
    "not_utf8": (b'{"round": 3, "train": {"loss": "\xff\xfe"}}', "not UTF-8 text"),
    "5000_digits": (b'{"round": 3, "train": {"loss": ' + b"7" * 5000 + b"}}", "a number too long to read"),
    "deep_nesting": (b'{"round": 3, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    "no_round": (b'{"train": {"loss": 0.01}}', "no round"),
    "round_string": (b'{"round": "3", "train": {"loss": 0.01}}', "round not an integer from 1 to 2**53"),
    "round_bool": (b'{"round": true, "train": {"loss": 0.01}}', "round not an integer from 1 to 2**53"),
    "round_huge": (b'{"round": 1e999, "train": {"loss": 0.01}}', "round not an integer from 1 to 2**53"),
}


def _run_dir(tmp_path: Path, lines: list[bytes], name: str = "run") -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return run


def _good_lines() -> list[bytes]:
    return [json.dumps(r).encode() for r in GOOD]


def _table(out: str) -> dict[str, str]:
    lines = out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return dict(zip(header, [c.strip() for c in lines[2].strip("|").split("|")]))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_compare_skips_a_line_that_is_not_a_record_and_says_why(kind, tmp_path, capsys, caplog):
    line, reason = HOSTILE[kind]
    good = _good_lines()
    run = _run_dir(tmp_path, [good[0], line, good[1]])
    with caplog.at_level(logging.WARNING):
        assert main(["compare", str(run), "--target", "train/loss=0.02"]) == 0
    cells = _table(capsys.readouterr().out)
    assert cells["rounds"] == "2"  # the two good records, both read
    assert cells["final train/loss"] == f"{GOOD[1]['train']['loss']:.4f}"
    assert cells["rounds to train/loss <= 0.02"] == "not reached"  # the hostile line's 0.01 never counts
    assert f"skipped 1 record of {run / 'metrics.jsonl'}: 1 {reason}" in caplog.text


def test_plot_draws_the_good_records_of_a_file_holding_every_hostile_line(tmp_path, caplog):
    good = _good_lines()
    run = _run_dir(tmp_path, [good[0], *(line for line, _ in HOSTILE.values()), good[1]])
    out = tmp_path / "loss.png"
    with caplog.at_level(logging.WARNING):
        assert main(["plot", str(run), "--metric", "train/loss", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert f"skipped {len(HOSTILE)} records of {run / 'metrics.jsonl'}" in caplog.text


def test_strings_booleans_and_lists_are_never_numbers(tmp_path, capsys, caplog):
    records = [
        {"round": 1, "eval": {"accuracy": 0.5}},
        {"round": 2, "eval": {"accuracy": "0.99"}},
        {"round": 3, "eval": {"accuracy": True}},
        {"round": 4, "eval": {"accuracy": [0.95]}},
        {"round": 5, "eval": {"accuracy": 10 ** 400}},  # an integer past float range
        {"round": 6, "eval": "0.97"},  # a section that is not an object
    ]
    assert metric_curve(records, "eval/accuracy").rounds == [1]
    assert metric_curve(records, "eval/accuracy").not_numbers == 5
    run = _run_dir(tmp_path, [json.dumps(r).encode() for r in records])
    with caplog.at_level(logging.WARNING):
        assert main(["compare", str(run), "--target", "eval/accuracy=0.9"]) == 0
    cells = _table(capsys.readouterr().out)
    assert cells["final eval/accuracy"] == "0.5000" and cells["best eval/accuracy"] == "0.5000"
    assert cells["rounds to eval/accuracy >= 0.9"] == "not reached"
    assert f"skipped 5 values of eval/accuracy in {run / 'metrics.jsonl'}: not numbers" in caplog.text


def test_a_wall_time_that_is_not_a_number_is_not_added(tmp_path, capsys):
    records = [{"round": 1, "train": {"loss": 1.0}, "round_time_s": 2.0},
               {"round": 2, "train": {"loss": 0.5}, "round_time_s": "3"},
               {"round": 3, "train": {"loss": 0.4}, "round_time_s": -1e308}]
    run = _run_dir(tmp_path, [json.dumps(r).encode() for r in records])
    assert main(["compare", str(run)]) == 0
    assert _table(capsys.readouterr().out)["wall time (s)"] == "2.0"


@pytest.mark.parametrize("size, named", [
    (["0", "0"], "the width must be a whole number of pixels from 50 to 10000, got 0"),
    (["-5", "100"], "got -5"),
    (["100", "-5"], "the height must be"),
    (["60000", "60000"], "got 60000"),
    (["10000", "10000"], "100,000,000 pixels, more than the 25,000,000"),
])
def test_plot_refuses_a_size_out_of_bounds_before_drawing(size, named, tmp_path, capsys):
    run = _run_dir(tmp_path, _good_lines())
    out = tmp_path / "p.png"
    assert main(["plot", str(run), "--metric", "train/loss", "--out", str(out), "--size", *size]) == 2
    err = capsys.readouterr().err
    assert f"fedsim: error: --size {size[0]} {size[1]}:" in err and named in err
    assert not out.exists()


def test_plot_size_check_refuses_non_integers():
    with pytest.raises(ReportError, match="got 800.5"):
        check_plot_options("p.png", (800.5, 500))
    with pytest.raises(ReportError, match="got True"):
        check_plot_options("p.png", (True, 500))
    with pytest.raises(ReportError, match="expected WIDTH HEIGHT"):
        check_plot_options("p.png", (800,))


def test_plot_into_a_missing_folder_is_refused_by_name_and_creates_nothing(tmp_path, capsys):
    run = _run_dir(tmp_path, _good_lines())
    out = tmp_path / "missing" / "deeper" / "p.png"
    assert main(["plot", str(run), "--metric", "train/loss", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"its folder {str(out.parent)!r} does not exist; create it first" in err
    assert not (tmp_path / "missing").exists()


def test_plot_onto_a_folder_or_in_an_unknown_format_is_refused(tmp_path, capsys):
    run = _run_dir(tmp_path, _good_lines())
    assert main(["plot", str(run), "--metric", "train/loss", "--out", str(tmp_path)]) == 2
    assert "is a folder; name the image file" in capsys.readouterr().err
    assert main(["plot", str(run), "--metric", "train/loss", "--out", str(tmp_path / "p.xyz")]) == 2
    assert "cannot write a 'xyz' image" in capsys.readouterr().err
    assert not (tmp_path / "p.xyz").exists()


@pytest.mark.parametrize("target", ["train/loss", "train/loss=", "=0.3", "train/loss=abc", "train/loss=nan"])
def test_compare_refuses_a_malformed_target(target, tmp_path, capsys):
    run = _run_dir(tmp_path, _good_lines())
    assert main(["compare", str(run), "--target", target]) == 2
    assert f"--target {target!r}: expected NAME=NUMBER" in capsys.readouterr().err


def test_run_reader_names_a_damaged_line_instead_of_a_traceback(tmp_path):
    good = _good_lines()
    for line, reason in HOSTILE.values():
        path = _run_dir(tmp_path, [good[0], line, good[1]], name=f"r{abs(hash(line))}") / "metrics.jsonl"
        with pytest.raises(MetricsFileError, match=rf"line 2: not a metrics record \({reason.replace('*', '.')}\)"):
            read_metrics(path)


def test_a_last_line_cut_short_is_ignored_by_both_readers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in _good_lines()) + b'{"round": 3, "tra')
    assert [r["round"] for r in read_metrics(path)] == [1, 2]
    read = read_records(path)
    assert [r["round"] for r in read.records] == [1, 2] and read.describe_skipped(path) is None


def test_hostile_files_are_read_without_tensorflow_and_warned_on_stderr(tmp_path):
    good = _good_lines()
    run = _run_dir(tmp_path, [good[0], HOSTILE["number"][0], HOSTILE["not_utf8"][0], good[1]])
    done = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW, "compare", str(run)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "EXIT 0 HEAVY []" in done.stdout
    assert f"skipped 2 records of {run / 'metrics.jsonl'}: 1 not a JSON object, 1 not UTF-8 text" in done.stderr
    assert "Traceback" not in done.stderr
