"""A catalogue of bad data through ``fedsim run`` (issue 18, item 7): each probe ends in a
named error, exit code 2, and loses nothing.

One row per probe: ``id: probe(tmp) -> Probe``. A probe writes its data files
under ``tmp / "in"`` in the real formats (``.npz``, LEAF JSON shards, TFF's
``.sqlite`` / ``.lzma``) and returns the config's data block, the error class
and a pattern the message must match (naming the bad file, client, row or
label). Each row is checked twice: in process, for the error class, and
through the CLI, for exit code 2, ``fedsim: error:`` without a traceback, the
input files left byte for byte as they were (no half-decompressed cache added),
and a run directory holding no metrics, so ``--out`` can be used again.
"""
from __future__ import annotations

import json
import lzma
import re
import zipfile
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import pytest

from fedsim.cli import main
from fedsim.data import ClientData, ClientDataError, write_sql_client_data
from fedsim.data.labels import LabelError
from fedsim.datasets import emnist as emnist_module
from fedsim.datasets import tff_sqlite
from fedsim.datasets.tff_sqlite import DamagedCacheError
from fedsim.experiment import config_from_dict, config_to_toml, run_experiment
from fedsim.experiment.build_data import ArraysFileError, DataBuildError, LabelRangeError, SplitMismatchError
from fedsim.experiment.preflight import CohortTooLargeError, DataNotFoundError

ROWS, FEATURES = 40, 4
X = np.random.default_rng(0).normal(size=(ROWS, FEATURES)).astype(np.float32)
Y = np.arange(ROWS) % 3


@attrs.frozen
class Probe:
    data: dict
    error: type
    message: str  # a regular expression
    cohort_size: int = 2


def config(probe: Probe) -> dict:
    return {"rounds": 1, "data": probe.data, "model": {"name": "logreg"},
            "sampler": {"cohort_size": probe.cohort_size}, "logging": {"tensorboard": False}}


# Arrays (.npz) -------------------------------------------------------------------------------
def arrays(path: Path, **fields) -> dict:
    return {"name": "arrays", "path": str(path), "num_clients": 4, **fields}


def savez(tmp: Path, name: str = "data.npz", **members) -> Path:
    path = tmp / name
    np.savez(path, **{"x": X, "y": Y, **members})
    return path


def rewrite(path: Path, change: Callable[[bytes], bytes]) -> Path:
    path.write_bytes(change(path.read_bytes()))
    return path


def member_offset(path: Path, member: str) -> int:
    """Where ``member``'s stored data starts inside the zip archive at ``path``."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    content = path.read_bytes()
    name_length, extra_length = np.frombuffer(content[info.header_offset + 26:info.header_offset + 30], "<u2")
    return info.header_offset + 30 + int(name_length) + int(extra_length)


def flip_byte_in(path: Path, member: str, skip: int) -> Path:
    position = member_offset(path, member) + skip
    return rewrite(path, lambda b: b[:position] + bytes([b[position] ^ 0xFF]) + b[position + 1:])


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def npy_bytes(tmp: Path) -> bytes:
    np.save(tmp / "x.npy", X)
    content = (tmp / "x.npy").read_bytes()
    (tmp / "x.npy").unlink()
    return content


def compressed_with_bad_byte(tmp: Path) -> Path:
    path = tmp / "data.npz"
    np.savez_compressed(path, x=X, y=Y)
    return flip_byte_in(path, "x.npy", 40)


def with_label(label, dtype=None) -> np.ndarray:
    y = Y.astype(dtype) if dtype else Y.copy()
    y[17] = label
    return y


# LEAF (JSON shards) --------------------------------------------------------------------------
def users(count: int = 4, width: int = FEATURES, labels=(0, 1, 2)) -> dict:
    return {f"w{i}": {"x": [[0.25] * width] * len(labels), "y": list(labels)} for i in range(count)}


def shard(user_data: dict) -> dict:
    return {"users": list(user_data), "num_samples": [len(d["y"]) for d in user_data.values()],
            "user_data": user_data}


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def leaf(tmp: Path, train=None, test=None, num_classes: int = 3) -> dict:
    """A LEAF block over ``tmp/train`` and ``tmp/test``, each one shard (``train``/``test``: its content)."""
    write(tmp / "train" / "s.json", shard(users()) if train is None else train)
    write(tmp / "test" / "s.json", shard(users(2)) if test is None else test)
    return {"name": "leaf", "train_dir": str(tmp / "train"), "test_dir": str(tmp / "test"),
            "num_classes": num_classes}


def shard_in(tmp: Path, split: str = "train") -> str:
    return re.escape(str(tmp / split / "s.json"))


def leaf_with_folder_named_json(tmp: Path) -> Probe:
    data = leaf(tmp)
    (tmp / "train" / "z.json").mkdir()
    return Probe(data, ClientDataError, re.escape(str(tmp / "train" / "z.json")) + " is a directory")


def leaf_split_is_a_folder_named_json(tmp: Path) -> Probe:
    data = leaf(tmp)
    (tmp / "s.json").mkdir()
    data["train_dir"] = str(tmp / "s.json")
    return Probe(data, DataNotFoundError, r"data.train_dir='.*s\.json' holds no \*\.json shard")


def leaf_deeply_nested(tmp: Path) -> Probe:
    return Probe(leaf(tmp, train=b"[" * 100_000 + b"]" * 100_000), ClientDataError,
                 shard_in(tmp) + " nests JSON lists or objects deeper than the reader allows")


def leaf_user_data_mismatch(tmp: Path) -> Probe:
    content = shard(users())
    content["user_data"]["ghost"] = {"x": [[0.0] * FEATURES], "y": [0]}
    return Probe(leaf(tmp, train=content), ClientDataError,
                 shard_in(tmp) + r": user 'ghost' has `user_data` but is not in `users`")


def leaf_user_twice(tmp: Path) -> Probe:
    content = shard(users())
    content["users"][1], content["num_samples"][1] = "w0", 3
    return Probe(leaf(tmp, train=content), ClientDataError, r"user 'w0' is listed twice in `users`")


def fractional_leaf_label(tmp: Path) -> Probe:
    return Probe(leaf(tmp, test=shard({**users(2), "w1": {"x": [[0.0] * FEATURES] * 2, "y": [0, 1.5]}})),
                 LabelError, shard_in(tmp, "test") + r", user 'w1': label 1.5 at position 1 of 'y' is not a whole")


def leaf_nan_label(tmp: Path) -> Probe:
    content = json.dumps(shard(users())).replace('"y": [0, 1, 2]}}', '"y": [0, NaN, 2]}}').encode()
    return Probe(leaf(tmp, train=content), LabelError, r"user 'w3': label nan at position 1 of 'y'")


def leaf_test_label(tmp: Path) -> Probe:
    return Probe(leaf(tmp, test=shard(users(2, labels=(0, 7)))), DataBuildError,
                 r"test client 'w0' has label 7, outside \[0, 3\)")


def leaf_text_labels(tmp: Path) -> Probe:
    return Probe(leaf(tmp, test=shard(users(2, labels=("a", "b")))), DataBuildError,
                 r"test client 'w0' has label b?'a' of dtype .*labels must be integer class indices")


def leaf_test_width(tmp: Path) -> Probe:
    return Probe(leaf(tmp, test=shard(users(2, width=10))), SplitMismatchError,
                 r"test client 'w0' has examples x float32 \(10,\).* train client 'w0' has x float32 \(4,\)")


def leaf_train_without_samples(tmp: Path) -> Probe:
    return Probe(leaf(tmp, train=shard(users(labels=()))), ClientDataError,
                 r"no user of the LEAF train split '.*train' has a sample")


# TFF's SQLite cache (EMNIST) ----------------------------------------------------------------
def emnist(tmp: Path, name: str, content: bytes) -> dict:
    write(tmp / name, content)
    return {"name": "emnist", "cache_dir": str(tmp), "download": False}


def tiny_emnist_sqlite(tmp: Path) -> bytes:
    client = {"label": np.int32([3, 7]), "pixels": np.full((2, 28, 28), 0.5, np.float32)}
    path = tmp / "made.sqlite"
    write_sql_client_data(path, {split: ClientData.from_tensor_slices({"w1": client})
                                 for split in ("digits_only_train", "digits_only_test")})
    content = path.read_bytes()
    path.unlink()
    return content


def lzma_probe(tmp: Path, content: bytes, message: str) -> Probe:
    compressed = re.escape(str(tmp / "emnist_all.sqlite.lzma"))
    return Probe(emnist(tmp, "emnist_all.sqlite.lzma", content), DamagedCacheError, compressed + message)


# The catalogue -------------------------------------------------------------------------------
CASES: dict[str, Callable[[Path], Probe]] = {
    "npz_empty_file": lambda tmp: Probe(
        arrays(write(tmp / "data.npz", b"")), ArraysFileError,
        r"cannot read .*data\.npz: not a readable \.npz archive: empty, truncated .*\(No data left in file\)"),
    "npz_truncated": lambda tmp: Probe(
        arrays(rewrite(savez(tmp), lambda b: b[: len(b) // 2])), ArraysFileError,
        r"cannot read .*data\.npz: not a readable \.npz archive.*\(File is not a zip file\)"),
    "npz_bad_crc": lambda tmp: Probe(
        arrays(flip_byte_in(savez(tmp), "x.npy", 200)), ArraysFileError,
        r"data\.npz: array 'x' is damaged \(Bad CRC-32 for file 'x\.npy'\); write it with numpy\.savez"),
    "npz_compressed_member_damaged": lambda tmp: Probe(
        arrays(compressed_with_bad_byte(tmp)), ArraysFileError, r"data\.npz: array 'x' is damaged"),
    "npz_is_a_npy_file": lambda tmp: Probe(
        arrays(write(tmp / "data.npz", npy_bytes(tmp))), ArraysFileError,
        r"data\.npz: a single array \(a \.npy file\), not a \.npz archive"),
    "npz_members_are_not_npy": lambda tmp: Probe(
        arrays(zip_of(tmp / "data.npz", {"x.npy": b"hello", "y.npy": b"world"})), ArraysFileError,
        r"data\.npz: member 'x' is not a \.npy array"),
    "npz_members_are_text_files": lambda tmp: Probe(
        arrays(zip_of(tmp / "data.npz", {"x.txt": b"1 2", "y.csv": b"0"})), ArraysFileError,
        r"data\.npz: member 'x\.txt' is not a \.npy array"),
    "npz_arrays_not_named_x_and_y": lambda tmp: Probe(
        arrays(zip_of(tmp / "data.npz", {"a.npy": npy_bytes(tmp), "b.npy": npy_bytes(tmp)})), ArraysFileError,
        r"data\.npz has members \['a', 'b'\], not the arrays 'x' and 'y'"),
    "npz_without_y": lambda tmp: Probe(
        arrays(zip_of(tmp / "data.npz", {"x.npy": npy_bytes(tmp)})), ArraysFileError,
        r"data\.npz has members \['x'\], not the arrays 'x' and 'y'"),
    "npz_row_counts_differ": lambda tmp: Probe(
        arrays(savez(tmp, y=Y[:30])), ArraysFileError, r"data\.npz: 'x' has 40 rows but 'y' has 30 labels"),
    "npz_object_arrays_need_pickle": lambda tmp: Probe(
        arrays(savez(tmp, x=np.array([[1.0], [1.0, 2.0]] * 20, dtype=object))), ArraysFileError,
        r"data\.npz: array 'x' holds Python objects .*fedsim never unpickles data files"),
    "npz_label_of_a_billion": lambda tmp: Probe(
        arrays(savez(tmp, y=with_label(10**9))), LabelRangeError,
        r"the largest label is 1000000000 \(row 17\).* set data\.num_classes"),
    "npz_label_beyond_declared_num_classes": lambda tmp: Probe(
        arrays(savez(tmp, y=with_label(5)), num_classes=3), LabelRangeError,
        r"data\.npz: label 5 at row 17 is outside \[0, 3\) of data\.num_classes = 3"),
    "npz_fractional_label": lambda tmp: Probe(
        arrays(savez(tmp, y=with_label(1.5, np.float64))), LabelError,
        r"data\.npz: label 1\.5 at position 17 of 'y' is not a whole number"),
    "npz_nan_label": lambda tmp: Probe(
        arrays(savez(tmp, y=with_label(np.nan, np.float64))), LabelError,
        r"data\.npz: label nan at position 17 of 'y' is not a whole number"),
    "npz_negative_label": lambda tmp: Probe(
        arrays(savez(tmp, y=with_label(-1))), DataBuildError, r"data\.npz: label -1 at row 17 is negative"),
    "npz_scalar_x": lambda tmp: Probe(
        arrays(savez(tmp, x=np.float32(1.0))), ArraysFileError,
        r"data\.npz: 'x' must hold one row per example .* got shapes \(\) and \(40,\)"),
    "cohort_larger_than_population": lambda tmp: Probe(
        arrays(savez(tmp)), CohortTooLargeError,
        r"sampler\.cohort_size=5 is larger than the population of 4 train clients", cohort_size=5),
    "leaf_folder_named_json_in_train_dir": leaf_with_folder_named_json,
    "leaf_train_dir_is_a_folder_named_json": leaf_split_is_a_folder_named_json,
    "leaf_deeply_nested_json": leaf_deeply_nested,
    "leaf_shard_not_an_object": lambda tmp: Probe(
        leaf(tmp, train=[1, 2]), ClientDataError, shard_in(tmp) + " is not a LEAF shard: expected a JSON object"),
    "leaf_user_data_not_in_users": leaf_user_data_mismatch,
    "leaf_user_without_user_data": lambda tmp: Probe(
        leaf(tmp, train={**shard(users()), "user_data": users(3)}), ClientDataError,
        r"user 'w3' is listed in `users` but has no `user_data`"),
    "leaf_user_listed_twice": leaf_user_twice,
    "leaf_not_utf8": lambda tmp: Probe(
        leaf(tmp, train=b'{"users": ["\xff"]}'), ClientDataError, shard_in(tmp) + " is not UTF-8 text"),
    "leaf_fractional_label": fractional_leaf_label,
    "leaf_nan_label": leaf_nan_label,
    "leaf_test_label_beyond_num_classes": leaf_test_label,
    "leaf_text_labels": leaf_text_labels,
    "leaf_test_split_of_another_width": leaf_test_width,
    "leaf_train_split_without_samples": leaf_train_without_samples,
    "emnist_truncated_lzma": lambda tmp: lzma_probe(
        tmp, lzma.compress(tiny_emnist_sqlite(tmp))[:100], r" is not a complete LZMA file .*delete it"),
    "emnist_garbage_lzma": lambda tmp: lzma_probe(
        tmp, b"not lzma at all" * 10, r" is not a complete LZMA file \(Input format not supported"),
    "emnist_lzma_of_a_non_sqlite_file": lambda tmp: lzma_probe(
        tmp, lzma.compress(b"garbage" * 1000), r" decompresses to a file that is not TFF's SQLite database"),
    "emnist_garbage_sqlite": lambda tmp: Probe(
        emnist(tmp, "emnist_all.sqlite", b"garbage" * 1000), DamagedCacheError,
        r"emnist_all\.sqlite in the data set cache is damaged .*delete it"),
    "emnist_cohort_larger_than_population": lambda tmp: Probe(
        emnist(tmp, "emnist_all.sqlite", tiny_emnist_sqlite(tmp)), CohortTooLargeError,
        r"sampler\.cohort_size=2 is larger than the population of 1 train clients \(data\.name 'emnist'\)"),
    "shakespeare_truncated_lzma": lambda tmp: Probe(
        {**emnist(tmp, "shakespeare.sqlite.lzma", lzma.compress(b"x" * 5000)[:40]), "name": "shakespeare"},
        DamagedCacheError, r"shakespeare\.sqlite\.lzma is not a complete LZMA file"),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (folders included, as empty), by relative path."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"") for p in folder.rglob("*")}


def assert_nothing_lost(inputs: Path, before: dict[str, bytes], run_dir: Path) -> None:
    assert snapshot(inputs) == before  # inputs unchanged, no (partial) cache left beside them
    # A failed start leaves no metrics and no checkpoints, so the same --out takes the next run.
    assert not (run_dir / "metrics.jsonl").exists()
    assert not list(run_dir.glob("checkpoints/*"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_is_a_named_error_with_exit_code_2(case, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    probe = CASES[case](inputs)
    raw = config(probe)
    before = snapshot(inputs)

    with pytest.raises(probe.error, match=probe.message):
        run_experiment(config_from_dict(raw), tmp_path / "run_a", progress=False)
    assert_nothing_lost(inputs, before, tmp_path / "run_a")

    config_file = tmp_path / "run.toml"
    config_file.write_text(config_to_toml(config_from_dict(raw)), encoding="utf-8")
    capsys.readouterr()
    code = main(["run", str(config_file), "--out", str(tmp_path / "run_b"), "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert re.search(r"^fedsim: error: .*" + probe.message, stderr, re.MULTILINE), stderr
    assert_nothing_lost(inputs, before, tmp_path / "run_b")


def run_cli(config: dict, folder: Path, out: Path, capsys) -> tuple[int, str]:
    path = folder / "run.toml"
    path.write_text(config_to_toml(config_from_dict(config)), encoding="utf-8")
    capsys.readouterr()
    code = main(["run", str(path), "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err


def smaller_cohort(probe: Probe, inputs: Path) -> Probe:
    return attrs.evolve(probe, cohort_size=2)


def good_file(probe: Probe, inputs: Path) -> Probe:
    savez(inputs)  # the damaged data.npz written again
    return probe


@pytest.mark.parametrize("case, fix", [("cohort_larger_than_population", smaller_cohort), ("npz_bad_crc", good_file)])
def test_out_is_reusable_after_the_error_is_fixed(case, fix, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    probe = CASES[case](inputs)
    out = tmp_path / "run"
    code, stderr = run_cli(config(probe), tmp_path, out, capsys)
    assert code == 2 and "Traceback" not in stderr
    code, stderr = run_cli(config(fix(probe, inputs)), tmp_path, out, capsys)
    assert code == 0, stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["round"] for r in records] == [1]


def test_a_damaged_download_leaves_no_cache(tmp_path, monkeypatch):
    remote, cache = tmp_path / "remote", tmp_path / "cache"
    write(remote / "emnist_all.sqlite.lzma", lzma.compress(tiny_emnist_sqlite(tmp_path))[:200])
    monkeypatch.setattr(tff_sqlite, "TFF_DATASETS_URL", remote.as_uri() + "/")  # a file:// URL: no network
    with pytest.raises(DamagedCacheError, match=r"the download of file://.*emnist_all\.sqlite\.lzma is not a "
                                                r"complete LZMA file .*try again"):
        emnist_module.load_data(cache_dir=cache, download=True)
    assert list(cache.iterdir()) == []


def test_a_good_lzma_next_to_a_bad_one_is_used_once_the_bad_cache_is_deleted(tmp_path, capsys):
    good = lzma.compress(tiny_emnist_sqlite(tmp_path))
    probe = CASES["emnist_garbage_sqlite"](tmp_path)
    write(tmp_path / "emnist_all.sqlite.lzma", good)
    code, stderr = run_cli(config(probe), tmp_path, tmp_path / "run", capsys)
    assert code == 2 and "emnist_all.sqlite in the data set cache is damaged" in stderr
    (tmp_path / "emnist_all.sqlite").unlink()  # what the message says to do
    train, test = emnist_module.load_data(cache_dir=tmp_path, download=False)
    assert list(train.client_ids) == ["w1"] and test.num_examples("w1") == 2
    assert (tmp_path / "emnist_all.sqlite").read_bytes() == lzma.decompress(good)

