"""Checkpoint files: round trip through npz + JSON, structure checks, atomic writes, keep-last-n, corruption."""
from __future__ import annotations

import json

import attrs
import numpy as np
import pytest

from fedsim.checkpoint import (
    CheckpointError,
    StructureMismatchError,
    flatten,
    list_checkpoints,
    load_checkpoint,
    load_newest,
    restore,
    save_checkpoint,
)


@attrs.frozen
class State:
    round_num: int
    weights: tuple
    optimizer: dict
    note: str = "fedavg"
    extra: object = None


def make_state(round_num: int = 3) -> State:
    rng = np.random.default_rng(round_num)
    return State(
        round_num=round_num,
        weights=(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)),
        optimizer={"step": np.int64(round_num), "lr": 0.1, "nested": [np.arange(2), True]},
    )


def assert_same(a: State, b: State) -> None:
    assert type(b) is State and b.round_num == a.round_num and b.note == a.note and b.extra is None
    for x, y in zip(a.weights, b.weights):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert b.optimizer["step"] == a.optimizer["step"] and isinstance(b.optimizer["step"], np.int64)
    assert b.optimizer["lr"] == 0.1 and type(b.optimizer["lr"]) is float
    assert b.optimizer["nested"][1] is True
    np.testing.assert_array_equal(b.optimizer["nested"][0], [0, 1])


def test_flatten_restore_round_trip_keeps_types_and_bits():
    state = make_state()
    arrays, structure = flatten(state)
    structure = json.loads(json.dumps(structure))  # the structure really is plain JSON
    assert_same(state, restore(make_state(0), structure, arrays))


def test_restore_names_the_path_of_a_shape_mismatch():
    arrays, structure = flatten(make_state())
    template = attrs.evolve(make_state(), weights=(np.zeros((5, 3), np.float32), np.zeros(3, np.float32)))
    with pytest.raises(StructureMismatchError, match=r"at weights\[0\]: checkpoint has float32 array of shape \[4, 3\], "
                                                     r"the run has float32 array of shape \[5, 3\]"):
        restore(template, structure, arrays)


def test_restore_names_missing_dict_keys():
    arrays, structure = flatten(make_state())
    template = attrs.evolve(make_state(), optimizer={"step": np.int64(0)})
    with pytest.raises(StructureMismatchError, match=r"at optimizer: checkpoint has a dict with keys \['lr', 'nested', 'step'\]"):
        restore(template, structure, arrays)


def test_objects_that_are_not_arrays_are_refused():
    with pytest.raises(TypeError, match="cannot checkpoint a leaf of type object"):
        flatten({"x": object()})


def test_save_then_load(tmp_path):
    path = save_checkpoint(tmp_path, 3, make_state(), meta={"note": "hi"})
    assert path.name == "round-000003"
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "state.json"]
    restored = load_checkpoint(path, make_state(0))
    assert restored.round_num == 3 and restored.meta == {"note": "hi"}
    assert_same(make_state(), restored.state)


def test_keep_last_n_and_no_temporary_directories_left(tmp_path):
    for round_num in (2, 4, 6, 8):
        save_checkpoint(tmp_path, round_num, make_state(round_num), keep=2)
    assert [r for r, _ in list_checkpoints(tmp_path)] == [8, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000006", "round-000008"]


def test_arrays_are_read_without_pickle(tmp_path):
    path = save_checkpoint(tmp_path, 1, make_state(1))
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[key].dtype != object for key in npz.files)


def test_truncated_newest_is_skipped_with_its_reason(tmp_path):
    save_checkpoint(tmp_path, 2, make_state(2))
    newest = save_checkpoint(tmp_path, 4, make_state(4))
    data = (newest / "arrays.npz").read_bytes()
    (newest / "arrays.npz").write_bytes(data[: len(data) // 2])
    restored = load_newest(tmp_path, make_state(0))
    assert restored.round_num == 2
    assert_same(make_state(2), restored.state)
    [(skipped, reason)] = restored.skipped
    assert skipped == newest and "does not match its SHA-256" in reason


def test_corrupted_state_json_is_skipped(tmp_path):
    save_checkpoint(tmp_path, 2, make_state(2))
    newest = save_checkpoint(tmp_path, 4, make_state(4))
    (newest / "state.json").write_text('{"format": "fedsim-checkpoint", "vers', encoding="utf-8")
    restored = load_newest(tmp_path, make_state(0))
    assert restored.round_num == 2
    assert "state.json is missing or unreadable" in restored.skipped[0][1]


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    only = save_checkpoint(tmp_path, 2, make_state(2))
    (only / "arrays.npz").unlink()
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*\n  skipped round-000002: .*arrays.npz is missing"):
        load_newest(tmp_path, make_state(0))


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .* \(there are none\)"):
        load_newest(tmp_path / "checkpoints", make_state(0))


def test_an_edited_round_or_meta_is_refused_by_the_header_hash(tmp_path):
    path = save_checkpoint(tmp_path, 4, make_state(4), meta={"config_sha256": "a"})
    for key, value in (("round", 3), ("meta", {"config_sha256": "b"})):
        document = json.loads((path / "state.json").read_text())
        original = json.loads((path / "state.json").read_text())
        document[key] = value
        (path / "state.json").write_text(json.dumps(document))
        with pytest.raises(CheckpointError, match="does not match its header SHA-256"):
            load_checkpoint(path, make_state(0))
        (path / "state.json").write_text(json.dumps(original))
    assert load_checkpoint(path, make_state(0)).round_num == 4


def test_a_directory_renamed_to_another_round_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, 4, make_state(4))
    path.rename(tmp_path / "round-000006")
    with pytest.raises(CheckpointError, match="named for round 6 but its state.json holds round 4"):
        load_checkpoint(tmp_path / "round-000006", make_state(0))


def test_version_1_checkpoints_without_a_header_hash_still_load(tmp_path):
    path = save_checkpoint(tmp_path, 2, make_state(2))
    document = json.loads((path / "state.json").read_text())
    del document["header_sha256"]
    document["version"] = 1
    (path / "state.json").write_text(json.dumps(document))
    assert_same(make_state(2), load_checkpoint(path, make_state(0)).state)


def test_remove_temporary_removes_only_killed_writers_leftovers(tmp_path):
    from fedsim.checkpoint import remove_temporary

    kept = save_checkpoint(tmp_path, 2, make_state(2))
    (tmp_path / ".tmp-round-000004-123").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    assert [p.name for p in remove_temporary(tmp_path)] == [".tmp-round-000004-123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", kept.name]
